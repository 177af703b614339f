import { AbortScope, BUILD_STATUSES, isTerminal, type BuildConfigInput, type BuildEvent, type BuildRecord, type BuildStatus } from "@m1l0/config";
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
  /** deadline of one request: the whole answer, or an event stream's headers (default 30 000 ms) */
  requestTimeoutMs?: number;
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
  private readonly requestTimeoutMs: number;

  constructor(options: M1l0ClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.maxReconnects = options.maxReconnects ?? 5;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /** Submits a config (an object, or YAML/JSON text as in m1l0.yaml); the API validates it. */
  async submit(config: BuildConfigInput | string, options: SubmitOptions = {}): Promise<SubmittedBuild> {
    const isText = typeof config === "string";
    const body = await this.call("/builds", (response) => response.json() as Promise<SubmittedBuild>, {
      method: "POST",
      headers: {
        "content-type": isText ? "application/yaml" : "application/json",
        ...(options.idempotencyKey ? { "idempotency-key": options.idempotencyKey } : {}),
      },
      body: isText ? config : JSON.stringify(config),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return { id: body.id, status: body.status };
  }

  async get(id: string, options: { signal?: AbortSignal } = {}): Promise<BuildRecord> {
    const { links: _links, ...record } = await this.call(
      `/builds/${encodeURIComponent(id)}`,
      (response) => response.json() as Promise<BuildRecord & { links?: unknown }>,
      options.signal ? { signal: options.signal } : {},
    );
    return record;
  }

  /**
   * Cancels a queued or running build (DELETE /builds/:id). `cancel` tells what happened:
   * "cancelled" (it never ran) or "signalled" (the worker running it aborts it within
   * seconds). A finished build → M1l0ApiError 409 CONFLICT.
   */
  async cancel(id: string, options: { signal?: AbortSignal } = {}): Promise<{ id: string; status: BuildRecord["status"]; cancel: string }> {
    const body = await this.call(`/builds/${encodeURIComponent(id)}`, (response) => response.json() as Promise<{ id: string; status: BuildRecord["status"]; cancel: string }>, {
      method: "DELETE",
      ...(options.signal ? { signal: options.signal } : {}),
    });
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
    const body = await this.call(`/builds${suffix}`, (response) => response.json() as Promise<{ builds: BuildRecord[]; nextCursor?: string | null }>, options.signal ? { signal: options.signal } : {});
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
    return this.call(`/builds/${encodeURIComponent(id)}/logs`, (response) => response.text(), options.signal ? { signal: options.signal } : {});
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
      // the deadline covers the answer's headers; the stream then lives as long as the caller's signal
      const connection = this.scope(signal);
      let response: Response;
      try {
        response = await connection.race(
          this.request(`/builds/${encodeURIComponent(id)}/logs?follow=1`, {
            headers: { accept: "text/event-stream", ...(lastEventId ? { "last-event-id": lastEventId } : {}) },
            signal: connection.signal,
          }),
        );
        connection.stopTimer();
      } catch (error) {
        connection.dispose();
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
      } finally {
        connection.dispose();
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
    const deadline = new AbortScope({ timeoutMs: options.timeoutMs, signal: options.signal, onTimeout: () => new M1l0TimeoutError(id, options.timeoutMs ?? 0) });
    const { signal } = deadline;
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
      if (deadline.timedOut) throw new M1l0TimeoutError(id, options.timeoutMs ?? 0);
      throw error;
    } finally {
      deadline.dispose();
    }
  }

  /** A scope for one request: the client's deadline, following the caller's signal. */
  private scope(signal: AbortSignal | undefined): AbortScope {
    const seconds = this.requestTimeoutMs / 1000;
    return new AbortScope({
      timeoutMs: this.requestTimeoutMs,
      signal,
      onTimeout: () => new M1l0ApiError(0, API_UNREACHABLE, `the M1L0 API at ${this.baseUrl} did not answer within ${seconds} s (the client's requestTimeoutMs)`),
    });
  }

  /** One request and the reading of its answer, under the client's deadline. */
  private async call<T>(path: string, read: (response: Response) => Promise<T>, init: RequestInit = {}): Promise<T> {
    const scope = this.scope(init.signal ?? undefined);
    try {
      return await scope.race(this.request(path, { ...init, signal: scope.signal }).then(read));
    } finally {
      scope.dispose();
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
