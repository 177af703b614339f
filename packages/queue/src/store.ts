import {
  BuilderError,
  formatBuildEvent,
  isTerminal,
  type AttemptError,
  type BuildEvent,
  type BuildRecord,
  type BuildStatus,
  type HistoryPosition,
} from "@m1l0/config";
import type { Redis } from "ioredis";
import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { InOrderPerKey } from "./in-order.js";
import { matchesListFilter, type ListOptions } from "./list-filter.js";
import { LOG_LINE_MAX_BYTES_DEFAULT, LOG_TAIL_EVENTS_DEFAULT, truncateLogLine } from "./log-line.js";
import { walkIndexNewestFirst, type LiveRecord } from "./newest-first.js";
import { CLAIM_SCRIPT, CREATE_SCRIPT, RELEASE_SCRIPT, SET_IF_UNCHANGED_SCRIPT } from "./store-scripts.js";

const FINISHED_TTL_SECONDS = 7 * 24 * 3600;
/** safety net only: the in-flight marker is removed when its build finishes */
const INFLIGHT_TTL_SECONDS = 24 * 3600;

export interface StoredEvent {
  /** Redis stream id, usable as SSE Last-Event-ID */
  id: string;
  event: BuildEvent;
}

export interface BuildStoreOptions {
  /** events kept per build stream: the live tail (the complete log is the worker's spool, then S3) [2,000] */
  logTailEvents?: number;
  /** longer log lines are truncated with a marker [8,192] */
  logLineMaxBytes?: number;
}

/**
 * Told every event this process appends to a build's stream, in order, with the promise of its
 * stream id (the worker's log spool). Called synchronously, so calls keep the append order.
 */
export type EventSink = (streamId: Promise<string>, event: BuildEvent) => void;

type RedisWithScripts = Redis & {
  m1l0CreateBuild(...keysAndArgs: Array<string | number>): Promise<unknown>;
  m1l0SetIfUnchanged(key: string, readSha1: string, value: string): Promise<number>;
};

/**
 * Build records and per-build event streams in Redis. Any API replica can read what any
 * worker wrote: the record is one JSON value, the events one Redis stream per build (a
 * bounded live tail: the complete log is archived by the worker).
 */

export class BuildStore {
  readonly logTailEvents: number;
  readonly logLineMaxBytes: number;
  private readonly sinks = new Map<string, EventSink>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix = "m1l0:",
    options: BuildStoreOptions = {},
  ) {
    this.logTailEvents = options.logTailEvents ?? LOG_TAIL_EVENTS_DEFAULT;
    this.logLineMaxBytes = options.logLineMaxBytes ?? LOG_LINE_MAX_BYTES_DEFAULT;
    // EVALSHA (ioredis falls back to EVAL once per connection after a NOSCRIPT): every POST runs it, so it should not send the script's text each time
    if (typeof (redis as RedisWithScripts).m1l0CreateBuild !== "function") redis.defineCommand("m1l0CreateBuild", { numberOfKeys: 4, lua: CREATE_SCRIPT });
    if (typeof (redis as RedisWithScripts).m1l0SetIfUnchanged !== "function") redis.defineCommand("m1l0SetIfUnchanged", { numberOfKeys: 1, lua: SET_IF_UNCHANGED_SCRIPT });
  }

  /** Redis keys that hold one build (for memory accounting). */
  keysOf(id: string): string[] {
    return [this.recordKey(id), this.eventsKey(id)];
  }

  /** Tees this process's appends to build `id` into `sink` until detached. */
  attachEventSink(id: string, sink: EventSink): void {
    this.sinks.set(id, sink);
  }

  detachEventSink(id: string, sink: EventSink): void {
    if (this.sinks.get(id) === sink) this.sinks.delete(id);
  }

  private recordKey(id: string): string {
    return `${this.prefix}build:${id}`;
  }
  private eventsKey(id: string): string {
    return `${this.prefix}build:${id}:events`;
  }
  private get indexKey(): string {
    return `${this.prefix}builds`;
  }

  private inflightKey(requestKey: string): string {
    return `${this.prefix}inflight:${requestKey}`;
  }
  private buildKeyLockKey(buildKey: string): string {
    return `${this.prefix}buildkey:${buildKey}`;
  }

  /** Creates the record; false when a build with this id already exists. */
  async create(record: BuildRecord): Promise<boolean> {
    const outcome = await this.createOrAttach(record);
    return outcome.created;
  }

  /**
   * Creates the record, indexes it and publishes its first event in one round trip (a Lua
   * script, so it is atomic). With `record.requestKey`, an active build made from the same
   * request wins instead: its id comes back with `attached: true` and nothing is created.
   * `created: false, attached: false` means a build with this id already exists.
   */
  async createOrAttach(record: BuildRecord): Promise<{ id: string; created: boolean; attached: boolean }> {
    const createdAt = Date.parse(record.createdAt);
    const event: BuildEvent = { type: "status", status: record.status, at: record.createdAt };
    const reply = (await (this.redis as RedisWithScripts).m1l0CreateBuild(
      this.recordKey(record.id),
      this.indexKey,
      this.eventsKey(record.id),
      this.inflightKey(record.requestKey ?? "-"),
      JSON.stringify(record),
      createdAt,
      // the index forgets builds with their records; older history lives in S3 (records/)
      createdAt - FINISHED_TTL_SECONDS * 1000,
      record.id,
      JSON.stringify(event),
      this.logTailEvents,
      INFLIGHT_TTL_SECONDS,
      `${this.prefix}build:`,
      record.requestKey ? "1" : "0",
    )) as [number, string];
    const [code, id] = reply;
    return { id, created: code === 1, attached: code === 0 };
  }

  /**
   * Claims the right to build the image named by `buildKey`: returns the id of the build
   * that holds it (this one when the claim succeeded or it already held it). The claim
   * lapses after `ttlMs`, so a crashed worker's claim cannot block the key forever.
   */
  async claimBuildKey(buildKey: string, buildId: string, ttlMs: number): Promise<string> {
    const holder = (await this.redis.eval(CLAIM_SCRIPT, 1, this.buildKeyLockKey(buildKey), buildId, ttlMs)) as string;
    return holder;
  }

  /** The build currently holding `buildKey`, if any. */
  async buildKeyHolder(buildKey: string): Promise<string | undefined> {
    return (await this.redis.get(this.buildKeyLockKey(buildKey))) ?? undefined;
  }

  /** Gives up a claim made by claimBuildKey (only if this build still holds it). */
  async releaseBuildKey(buildKey: string, buildId: string): Promise<void> {
    await this.redis.eval(RELEASE_SCRIPT, 1, this.buildKeyLockKey(buildKey), buildId);
  }

  /** Ends a finished build's in-flight life: retention on its keys, and no more attaching to it. */
  private async finished(record: BuildRecord): Promise<void> {
    const multi = this.redis.multi().expire(this.eventsKey(record.id), FINISHED_TTL_SECONDS).expire(this.recordKey(record.id), FINISHED_TTL_SECONDS);
    if (record.requestKey) multi.eval(RELEASE_SCRIPT, 1, this.inflightKey(record.requestKey), record.id);
    await multi.exec();
  }

  async get(id: string): Promise<BuildRecord | undefined> {
    const raw = await this.redis.get(this.recordKey(id));
    return raw ? (JSON.parse(raw) as BuildRecord) : undefined;
  }

  async require(id: string): Promise<BuildRecord> {
    const record = await this.get(id);
    if (!record) throw new BuilderError("NOT_FOUND", `build ${id} not found`);
    return record;
  }

  /** Removes a record that was never enqueued (enqueue failed after create). */
  async discard(id: string, requestKey?: string): Promise<void> {
    const multi = this.redis.multi().del(this.recordKey(id), this.eventsKey(id)).zrem(this.indexKey, id);
    if (requestKey) multi.eval(RELEASE_SCRIPT, 1, this.inflightKey(requestKey), id);
    await multi.exec();
  }

  /**
   * Read-modify-write that never loses a concurrent writer's update: the record is written
   * only if it is still the value read (SET_IF_UNCHANGED_SCRIPT compares its sha1), else it is
   * read and mutated again. Updates of one record from this process run in order, one at a
   * time; updates of different records do not wait for each other (a worker's next pickup
   * never queues behind the previous build's artifact statuses).
   */
  update(id: string, mutate: (record: BuildRecord) => BuildRecord): Promise<BuildRecord> {
    return this.updates.run(id, () => this.updateOnce(id, mutate));
  }

  private readonly updates = new InOrderPerKey();

  private async updateOnce(id: string, mutate: (record: BuildRecord) => BuildRecord): Promise<BuildRecord> {
    const key = this.recordKey(id);
    for (let attempt = 0; attempt < 20; attempt++) {
      const raw = await this.redis.get(key);
      if (!raw) throw new BuilderError("NOT_FOUND", `build ${id} not found`);
      const next = mutate(JSON.parse(raw) as BuildRecord);
      next.updatedAt = new Date().toISOString();
      const written = await (this.redis as RedisWithScripts).m1l0SetIfUnchanged(key, createHash("sha1").update(raw).digest("hex"), JSON.stringify(next));
      if (written === 1) return next;
      if (written === -1) throw new BuilderError("NOT_FOUND", `build ${id} not found`);
      // another writer got there first: wait a random while before reading again, or the loser
      // of a race can stay one round trip behind a writer with a burst of updates every time
      await sleep(Math.random() * Math.min(2 ** attempt, 50));
    }
    throw new BuilderError("INTERNAL", `could not update build ${id}: too much contention`);
  }

  /** Moves the build to a new status, records when, and publishes a status event. */
  async transition(id: string, status: BuildStatus, patch: Partial<BuildRecord> = {}): Promise<BuildRecord> {
    return (await this.move(id, status, patch, false))!;
  }

  /**
   * Like transition, but only while the build is still active: a terminal status is never
   * overwritten (a cancel racing a finishing worker must not produce two final answers).
   * Returns undefined when the build had already finished.
   */
  transitionIfActive(id: string, status: BuildStatus, patch: Partial<BuildRecord> = {}): Promise<BuildRecord | undefined> {
    return this.move(id, status, patch, true);
  }

  /** The one status change both of the above make; `onlyIfActive` leaves a finished build as it is. */
  private async move(id: string, status: BuildStatus, patch: Partial<BuildRecord>, onlyIfActive: boolean): Promise<BuildRecord | undefined> {
    let finished = false;
    const at = new Date().toISOString();
    const record = await this.update(id, (current) => {
      finished = onlyIfActive && isTerminal(current.status);
      return finished ? current : { ...current, ...patch, status, timestamps: { ...current.timestamps, [status]: at } };
    });
    if (finished) return undefined;
    const event: BuildEvent = { type: "status", status, at };
    if (record.error && status === "failed") event.error = record.error;
    if (record.image && (status === "succeeded" || status === "cached")) event.image = record.image;
    await this.appendEvent(id, event);
    if (isTerminal(status)) await this.finished(record);
    return record;
  }

  /** Marks a cancel request on the record; CONFLICT when the build has already finished. */
  async markCancelRequested(id: string): Promise<BuildRecord> {
    return this.update(id, (current) => {
      if (isTerminal(current.status)) {
        throw new BuilderError("CONFLICT", `build ${id} already finished (${current.status}); nothing to cancel`);
      }
      return { ...current, cancelRequestedAt: current.cancelRequestedAt ?? new Date().toISOString() };
    });
  }

  /** Tells every worker subscribed to `channel` that build `id` should stop. */
  async announceCancel(channel: string, id: string): Promise<void> {
    await this.redis.publish(channel, id);
  }

  /** Appends one failed attempt to the record's history. */
  async recordAttemptError(id: string, entry: AttemptError): Promise<BuildRecord> {
    return this.update(id, (current) => ({ ...current, attemptErrors: [...(current.attemptErrors ?? []), entry] }));
  }

  appendEvent(id: string, event: BuildEvent): Promise<string> {
    const streamId = this.redis.xadd(this.eventsKey(id), "MAXLEN", "~", this.logTailEvents, "*", "e", JSON.stringify(event)).then((added) => added ?? "");
    // issued before the sink hears of it: the sink's order is the stream's order
    this.sinks.get(id)?.(streamId, event);
    return streamId;
  }

  async appendLog(id: string, phase: "fetch" | "build" | "push", line: string): Promise<string> {
    return this.appendEvent(id, { type: "log", phase, line: truncateLogLine(line, this.logLineMaxBytes), at: new Date().toISOString() });
  }

  /** Every event still in the stream after `afterId`, a page at a time. */
  async *eventsAfter(id: string, afterId = "0", pageSize = 1_000): AsyncGenerator<StoredEvent> {
    for (let cursor = afterId; ; ) {
      const batch = await this.readEvents(id, cursor, { count: pageSize });
      if (batch.length === 0) return;
      yield* batch;
      cursor = batch[batch.length - 1]!.id;
    }
  }

  /**
   * Whether the stream may have lost events after `afterId` to trimming: from the start, when
   * its first event is not the build's first status; after an id, when that event is gone.
   */
  async trimmedAfter(id: string, afterId = "0"): Promise<boolean> {
    if (afterId !== "0") return (await this.redis.xrange(this.eventsKey(id), afterId, afterId)).length === 0;
    return startsTrimmed(await this.readEvents(id, "0", { count: 1 }));
  }

  /**
   * The first page of events after `afterId` and trimmedAfter's answer, in one round trip;
   * from the stream's start the page itself answers (one read).
   */
  async pageAfter(id: string, afterId: string, count: number): Promise<{ trimmed: boolean; events: StoredEvent[] }> {
    if (afterId === "0") {
      const events = await this.readEvents(id, "0", { count });
      return { trimmed: startsTrimmed(events), events };
    }
    const [trimmed, events] = await Promise.all([this.trimmedAfter(id, afterId), this.readEvents(id, afterId, { count })]);
    return { trimmed, events };
  }

  /**
   * The build's log as Redis holds it, one formatted event a line: the whole log for a build
   * within the live tail; for a longer one a first line says the start is in the archive.
   */
  async renderLog(id: string, pageSize = 1_000): Promise<string> {
    const lines: string[] = [];
    if (await this.trimmedAfter(id)) lines.push(`${new Date().toISOString()} [fetch] (earlier lines are past the live tail of ${this.logTailEvents} events; the complete log is archived when the build ends)`);
    for await (const item of this.eventsAfter(id, "0", pageSize)) lines.push(formatBuildEvent(item.event));
    return lines.length ? `${lines.join("\n")}\n` : "";
  }

  /**
   * Events after `afterId` ("0" = from the start). With `blockMs`, waits up to that long
   * for new ones. Uses its own connection for blocking reads (pass a duplicate).
   */
  async readEvents(id: string, afterId = "0", options: { blockMs?: number; count?: number; connection?: Redis } = {}): Promise<StoredEvent[]> {
    const redis = options.connection ?? this.redis;
    const count = options.count ?? 500;
    const reply =
      options.blockMs !== undefined
        ? await redis.xread("COUNT", count, "BLOCK", options.blockMs, "STREAMS", this.eventsKey(id), afterId)
        : await redis.xread("COUNT", count, "STREAMS", this.eventsKey(id), afterId);
    if (!reply) return [];
    const events: StoredEvent[] = [];
    for (const [, entries] of reply) {
      for (const [streamId, fields] of entries) {
        const payload = fields[1];
        if (payload) events.push({ id: streamId, event: JSON.parse(payload) as BuildEvent });
      }
    }
    return events;
  }

  /** Follows a build's events until it reaches a terminal status (or the signal aborts). */
  async *follow(id: string, afterId = "0", signal?: AbortSignal): AsyncGenerator<StoredEvent> {
    const blocking = this.redis.duplicate();
    try {
      let cursor = afterId;
      while (!signal?.aborted) {
        const batch = await this.readEvents(id, cursor, { blockMs: 1_000, connection: blocking });
        for (const item of batch) {
          cursor = item.id;
          yield item;
          if (item.event.type === "status" && isTerminal(item.event.status)) return;
        }
        if (batch.length === 0) {
          // the stream may have been trimmed/expired or the build ended before we attached
          const record = await this.get(id);
          if (!record || isTerminal(record.status)) {
            const tail = await this.readEvents(id, cursor);
            for (const item of tail) yield item;
            return;
          }
        }
      }
    } finally {
      blocking.disconnect();
    }
  }

  /**
   * Every record in Redis in history order (newest first, then by id), strictly after `after`:
   * the live half of a paged history (the archive holds the rest). Read lazily, `batch` at a time.
   */
  newestFirst(after?: HistoryPosition, batch?: number): AsyncGenerator<LiveRecord> {
    return walkIndexNewestFirst(this.redis, this.indexKey, (id) => this.recordKey(id), after, batch);
  }

  async list(options: ListOptions = {}): Promise<BuildRecord[]> {
    const limit = Math.min(Math.max(options.limit ?? 50, 1), 500);
    const records: BuildRecord[] = [];
    let offset = 0;
    const page = options.status || options.submitter !== undefined ? 200 : limit;
    while (records.length < limit) {
      const ids = await this.redis.zrevrange(this.indexKey, offset, offset + page - 1);
      if (ids.length === 0) break;
      offset += ids.length;
      const raws = await this.redis.mget(ids.map((id) => this.recordKey(id)));
      for (const raw of raws) {
        if (!raw) continue;
        const record = JSON.parse(raw) as BuildRecord;
        if (matchesListFilter(record, options)) records.push(record);
        if (records.length >= limit) break;
      }
    }
    return records;
  }
}

/** A stream read from its start lost events to trimming when its first event is not the build's first status. */
function startsTrimmed(events: StoredEvent[]): boolean {
  const first = events[0];
  return first !== undefined && !(first.event.type === "status" && first.event.status === "queued");
}
