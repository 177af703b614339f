import {
  BuilderError,
  isTerminal,
  type AttemptError,
  type BuildEvent,
  type BuildRecord,
  type BuildStatus,
} from "@m1l0/config";
import type { Redis } from "ioredis";

const EVENTS_MAXLEN = 20_000;
const FINISHED_TTL_SECONDS = 7 * 24 * 3600;

export interface StoredEvent {
  /** Redis stream id, usable as SSE Last-Event-ID */
  id: string;
  event: BuildEvent;
}

export interface ListOptions {
  status?: BuildStatus;
  /** only builds this token name submitted */
  submitter?: string;
  limit?: number;
}

/** Whether a record passes a list's filters. */
export function matchesListFilter(record: BuildRecord, options: ListOptions): boolean {
  return (!options.status || record.status === options.status) && (options.submitter === undefined || record.submitter === options.submitter);
}

/**
 * Build records and per-build event streams in Redis. Any API replica can read what any
 * worker wrote: the record is one JSON value, the events one Redis stream per build.
 */
export class BuildStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = "m1l0:",
  ) {}

  private recordKey(id: string): string {
    return `${this.prefix}build:${id}`;
  }
  private eventsKey(id: string): string {
    return `${this.prefix}build:${id}:events`;
  }
  private get indexKey(): string {
    return `${this.prefix}builds`;
  }

  /** Creates the record; false when a build with this id already exists. */
  async create(record: BuildRecord): Promise<boolean> {
    const created = await this.redis.set(this.recordKey(record.id), JSON.stringify(record), "NX");
    if (created !== "OK") return false;
    const createdAt = Date.parse(record.createdAt);
    await this.redis
      .multi()
      .zadd(this.indexKey, createdAt, record.id)
      // the index forgets builds with their records; older history lives in S3 (records/)
      .zremrangebyscore(this.indexKey, "-inf", createdAt - FINISHED_TTL_SECONDS * 1000)
      .exec();
    await this.appendEvent(record.id, { type: "status", status: record.status, at: record.createdAt });
    return true;
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
  async discard(id: string): Promise<void> {
    await this.redis.multi().del(this.recordKey(id), this.eventsKey(id)).zrem(this.indexKey, id).exec();
  }

  /**
   * Read-modify-write guarded by WATCH so concurrent writers never lose an update. WATCH
   * belongs to the connection, and one EXEC clears every watch on it, so updates from this
   * process are serialised: two interleaved WATCH/EXEC pairs on a shared connection would
   * let the second overwrite the first with a stale copy.
   */
  update(id: string, mutate: (record: BuildRecord) => BuildRecord): Promise<BuildRecord> {
    const run = this.updateQueue.then(() => this.watchedUpdate(id, mutate));
    this.updateQueue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private updateQueue: Promise<void> = Promise.resolve();

  private async watchedUpdate(id: string, mutate: (record: BuildRecord) => BuildRecord): Promise<BuildRecord> {
    const key = this.recordKey(id);
    for (let attempt = 0; attempt < 20; attempt++) {
      await this.redis.watch(key);
      const raw = await this.redis.get(key);
      if (!raw) {
        await this.redis.unwatch();
        throw new BuilderError("NOT_FOUND", `build ${id} not found`);
      }
      let next: BuildRecord;
      try {
        next = mutate(JSON.parse(raw) as BuildRecord);
      } catch (error) {
        await this.redis.unwatch(); // a refusing mutation must not leave the connection watching
        throw error;
      }
      next.updatedAt = new Date().toISOString();
      // KEEPTTL: a finished record keeps its retention when artifact statuses are added later
      const result = await this.redis.multi().set(key, JSON.stringify(next), "KEEPTTL").exec();
      if (result) return next;
    }
    throw new BuilderError("INTERNAL", `could not update build ${id}: too much contention`);
  }

  /** Moves the build to a new status, records when, and publishes a status event. */
  async transition(id: string, status: BuildStatus, patch: Partial<BuildRecord> = {}): Promise<BuildRecord> {
    const at = new Date().toISOString();
    const record = await this.update(id, (current) => ({
      ...current,
      ...patch,
      status,
      timestamps: { ...current.timestamps, [status]: at },
    }));
    const event: BuildEvent = { type: "status", status, at };
    if (record.error && status === "failed") event.error = record.error;
    if (record.image && (status === "succeeded" || status === "cached")) event.image = record.image;
    await this.appendEvent(id, event);
    if (isTerminal(status)) {
      await this.redis.multi().expire(this.eventsKey(id), FINISHED_TTL_SECONDS).expire(this.recordKey(id), FINISHED_TTL_SECONDS).exec();
    }
    return record;
  }

  /**
   * Like transition, but only while the build is still active: a terminal status is never
   * overwritten (a cancel racing a finishing worker must not produce two final answers).
   * Returns undefined when the build had already finished.
   */
  async transitionIfActive(id: string, status: BuildStatus, patch: Partial<BuildRecord> = {}): Promise<BuildRecord | undefined> {
    let finished = false;
    const at = new Date().toISOString();
    const record = await this.update(id, (current) => {
      finished = isTerminal(current.status);
      return finished ? current : { ...current, ...patch, status, timestamps: { ...current.timestamps, [status]: at } };
    });
    if (finished) return undefined;
    const event: BuildEvent = { type: "status", status, at };
    if (record.error && status === "failed") event.error = record.error;
    await this.appendEvent(id, event);
    if (isTerminal(status)) await this.redis.multi().expire(this.eventsKey(id), FINISHED_TTL_SECONDS).expire(this.recordKey(id), FINISHED_TTL_SECONDS).exec();
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

  async appendEvent(id: string, event: BuildEvent): Promise<string> {
    const streamId = await this.redis.xadd(this.eventsKey(id), "MAXLEN", "~", EVENTS_MAXLEN, "*", "e", JSON.stringify(event));
    return streamId ?? "";
  }

  async appendLog(id: string, phase: "fetch" | "build" | "push", line: string): Promise<string> {
    return this.appendEvent(id, { type: "log", phase, line, at: new Date().toISOString() });
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
