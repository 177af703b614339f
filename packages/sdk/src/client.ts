import { BUILD_STATUSES, isTerminal, type BuildConfigInput, type BuildEvent, type BuildRecord, type BuildStatus } from "@m1l0/config";
import { API_UNREACHABLE, M1l0ApiError, M1l0TimeoutError, errorFromResponse } from "./errors.js";
import { readSseFrames } from "./sse.js";

export interface M1l0ClientOptions {
  /** e.g. http://127.0.0.1:8080 */
  baseUrl: string;
  /** sent as `Authorization: Bearer <token>` */
  token?: string;
  /** a fetch implementation (defaults to the global one), e.g. to add a proxy agent */
  fetch?: typeof fetch;
  /** reconnect attempts in a row without receiving an event before watch() gives up (default 5) */
  maxReconnects?: number;
}

export interface SubmitOptions {
  /**
   * Sent as the `Idempotency-Key` header: a retried submit with the same key (and token)
   * returns the original build instead of starting a second one.
   */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

export interface SubmittedBuild {
  id: string;
  status: BuildStatus;
}

export interface ListBuildsOptions {
  status?: BuildStatus;
  /** 1–500, server default 50 */
  limit?: number;
  /** the `nextCursor` of a previous page (opaque): continue after its last build */
  cursor?: string;
  signal?: AbortSignal;
}

/** One page of `GET /builds`: newest first; `nextCursor` is absent on the last page. */
export interface BuildsPage {
  builds: BuildRecord[];
  nextCursor?: string;
}

export interface WatchOptions {
  /** resume after this event id (from a previous watch) instead of from the beginning */
  lastEventId?: string;
  signal?: AbortSignal;
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** give up (M1l0TimeoutError) after this long; the build keeps running */
  timeoutMs?: number;
}

/** One event of a build with its stream id (pass it back as `lastEventId` to resume). */
export interface WatchedEvent {
  id: string;
  event: BuildEvent;
}

const RETRYABLE_HTTP = new Set([502, 503, 504]);

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** A REST client for the M1L0 Image Builder API. */
export class M1l0Client {
  readonly baseUrl: string;
  private readonly token: string | undefined;
  private readonly fetchImpl: typeof fetch;
  private readonly maxReconnects: number;

  constructor(options: M1l0ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.maxReconnects = options.maxReconnects ?? 5;
  }

  /** Submits a config (an object, or YAML/JSON text as in m1l0.yaml); the API validates it. */
  async submit(config: BuildConfigInput | string, options: SubmitOptions = {}): Promise<SubmittedBuild> {
    const isText = typeof config === "string";
    const response = await this.request("/builds", {
      method: "POST",
      headers: {
        "content-type": isText ? "application/yaml" : "application/json",
        ...(options.idempotencyKey ? { "idempotency-key": options.idempotencyKey } : {}),
      },
      body: isText ? config : JSON.stringify(config),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const body = (await response.json()) as SubmittedBuild;
    return { id: body.id, status: body.status };
  }

  async get(id: string, options: { signal?: AbortSignal } = {}): Promise<BuildRecord> {
    const response = await this.request(`/builds/${encodeURIComponent(id)}`, options.signal ? { signal: options.signal } : {});
    const { links: _links, ...record } = (await response.json()) as BuildRecord & { links?: unknown };
    return record;
  }

  /**
   * Cancels a queued or running build (DELETE /builds/:id). `cancel` tells what happened:
   * "cancelled" (it never ran) or "signalled" (the worker running it aborts it within
   * seconds). A finished build → M1l0ApiError 409 CONFLICT.
   */
  async cancel(id: string, options: { signal?: AbortSignal } = {}): Promise<{ id: string; status: BuildRecord["status"]; cancel: string }> {
    const response = await this.request(`/builds/${encodeURIComponent(id)}`, { method: "DELETE", ...(options.signal ? { signal: options.signal } : {}) });
    const body = (await response.json()) as { id: string; status: BuildRecord["status"]; cancel: string };
    return { id: body.id, status: body.status, cancel: body.cancel };
  }

  /** Most recent builds first: one page (see listPage for its cursor, listAll for every page). */
  async list(options: ListBuildsOptions = {}): Promise<BuildRecord[]> {
    return (await this.listPage(options)).builds;
  }

  /**
   * One page of builds, newest first, and the cursor of the next one (absent on the last).
   * Cursors are positions: builds submitted meanwhile never shift or repeat later pages.
   */
  async listPage(options: ListBuildsOptions = {}): Promise<BuildsPage> {
    const query = new URLSearchParams();
    if (options.status) query.set("status", options.status);
    if (options.limit !== undefined) query.set("limit", String(options.limit));
    if (options.cursor !== undefined) query.set("cursor", options.cursor);
    const suffix = query.size ? `?${query.toString()}` : "";
    const response = await this.request(`/builds${suffix}`, options.signal ? { signal: options.signal } : {});
    const body = (await response.json()) as { builds: BuildRecord[]; nextCursor?: string | null };
    return { builds: body.builds, ...(body.nextCursor ? { nextCursor: body.nextCursor } : {}) };
  }

  /** Every build (this token may see), newest first, fetched a page (`limit`) at a time as you iterate. */
  async *listAll(options: Omit<ListBuildsOptions, "cursor"> = {}): AsyncGenerator<BuildRecord> {
    let cursor: string | undefined;
    do {
      const page = await this.listPage({ ...options, ...(cursor ? { cursor } : {}) });
      yield* page.builds;
      cursor = page.nextCursor;
    } while (cursor);
  }

  /** The build's log so far as text, one `<time> [phase] line` per event. */
  async logs(id: string, options: { signal?: AbortSignal } = {}): Promise<string> {
    const response = await this.request(`/builds/${encodeURIComponent(id)}/logs`, options.signal ? { signal: options.signal } : {});
    return response.text();
  }

  /**
   * Follows the build's events (status changes and log lines) as they happen, ending after
   * the final status. A dropped connection is resumed with `Last-Event-ID`, so no event is
   * repeated or lost; it gives up after `maxReconnects` failed attempts in a row.
   */
  async *watch(id: string, options: WatchOptions = {}): AsyncGenerator<WatchedEvent> {
    const { signal } = options;
    let lastEventId = options.lastEventId;
    let connectedOnce = false;
    let failures = 0;
    for (;;) {
      let response: Response;
      try {
        response = await this.request(`/builds/${encodeURIComponent(id)}/logs?follow=1`, {
          headers: { accept: "text/event-stream", ...(lastEventId ? { "last-event-id": lastEventId } : {}) },
          ...(signal ? { signal } : {}),
        });
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        const transient = error instanceof M1l0ApiError && (error.code === API_UNREACHABLE || RETRYABLE_HTTP.has(error.status));
        // a first connection that fails is a wrong address or a down API: say so at once
        if (!connectedOnce || !transient || ++failures > this.maxReconnects) throw error;
        await sleep(Math.min(250 * 2 ** (failures - 1), 5_000), signal);
        continue;
      }
      connectedOnce = true;
      try {
        for await (const frame of readSseFrames(response.body ?? new ReadableStream())) {
          if (frame.event === "end") return;
          if (frame.event !== "status" && frame.event !== "log") continue;
          const event = JSON.parse(frame.data) as BuildEvent;
          if (frame.id) lastEventId = frame.id;
          failures = 0;
          yield { id: frame.id ?? "", event };
          if (event.type === "status" && isTerminal(event.status)) return;
        }
      } catch (error) {
        if (signal?.aborted) throw signal.reason;
        if (error instanceof SyntaxError) throw new M1l0ApiError(response.status, "INVALID_RESPONSE", `the event stream sent invalid JSON: ${error.message}`, { cause: error });
        // otherwise the connection broke mid-stream: resume below
      }
      // the stream ended without a final status (network drop, proxy timeout, replica restart)
      if (++failures > this.maxReconnects) {
        throw new M1l0ApiError(0, API_UNREACHABLE, `lost the event stream of build ${id} and could not resume it after ${this.maxReconnects} attempts`);
      }
      await sleep(Math.min(250 * 2 ** (failures - 1), 5_000), signal);
    }
  }

  /** Resolves with the final record once the build succeeded, failed, was cancelled or cached. */
  async wait(id: string, options: WaitOptions = {}): Promise<BuildRecord> {
    const timeout = new AbortController();
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => timeout.abort(), options.timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout.signal]) : timeout.signal;
    try {
      let lastEventId: string | undefined;
      for (;;) {
        for await (const item of this.watch(id, { signal, ...(lastEventId ? { lastEventId } : {}) })) {
          lastEventId = item.id || lastEventId;
        }
        const record = await this.get(id, { signal });
        if (isTerminal(record.status)) return record;
        // the stream ended early without a final status: keep following from where it stopped
        await sleep(500, signal);
      }
    } catch (error) {
      if (timeout.signal.aborted && !options.signal?.aborted) throw new M1l0TimeoutError(id, options.timeoutMs ?? 0);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.token) headers.set("authorization", `Bearer ${this.token}`);
    if (!headers.has("accept")) headers.set("accept", "application/json");
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, { ...init, headers });
    } catch (cause) {
      if (init.signal?.aborted) throw init.signal.reason;
      const reason = (cause as { cause?: { code?: string; message?: string } }).cause;
      throw new M1l0ApiError(0, API_UNREACHABLE, `cannot reach the M1L0 API at ${this.baseUrl}: ${reason?.code ?? reason?.message ?? (cause as Error).message}`, { cause });
    }
    if (!response.ok) throw await errorFromResponse(response);
    return response;
  }
}

/** True for a status string the API knows (useful when parsing user input). */
export function isBuildStatus(value: string): value is BuildStatus {
  return (BUILD_STATUSES as readonly string[]).includes(value);
}
