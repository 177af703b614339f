/**
 * Redis state for the scale benchmark, written through the real BuildStore code paths (the
 * API's create script, the worker's transitions and event appends), many builds in flight at
 * once so that ioredis pipelines the commands; and the measuring and clean-up of a key prefix.
 */
import { isTerminal, newBuildId, type BuildConfig, type BuildEvent, type BuildRecord } from "@m1l0/config";
import { BUILD_JOB_NAME, BuildStore, DEFAULT_BUILD_JOB_OPTIONS, type BuildJobData } from "@m1l0/queue";
import type { Queue } from "bullmq";
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/** Builds written at once: enough to keep Redis busy through pipelining, bounded so memory stays small. */
const SEED_CONCURRENCY = 64;

/** A finished build as the worker left it: its final record and its event stream, oldest first. */
export interface FinishedTemplate {
  record: BuildRecord;
  events: BuildEvent[];
}

export async function readTemplate(store: BuildStore, id: string): Promise<FinishedTemplate> {
  const record = await store.require(id);
  const events: BuildEvent[] = [];
  for await (const item of store.eventsAfter(id)) events.push(item.event);
  return { record, events };
}

/** Runs `write(i)` for i in [0, count), `SEED_CONCURRENCY` at a time. */
async function forEachIndex(count: number, write: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(SEED_CONCURRENCY, count) }, async () => {
      while (next < count) await write(next++);
    }),
  );
}

/** The queued record POST /builds writes (apps/api/src/builds.ts submit), for a new id. */
function queuedRecord(template: BuildRecord, id: string, createdAtMs: number): BuildRecord {
  const at = new Date(createdAtMs).toISOString();
  const record: BuildRecord = { id, status: "queued", config: template.config, createdAt: at, updatedAt: at, timestamps: { queued: at }, attempts: 0 };
  if (template.submitter !== undefined) record.submitter = template.submitter;
  // a request key of the real one's form (a sha256 hex), unique per build so none attaches to another
  record.requestKey = createHash("sha256").update(id).digest("hex");
  return record;
}

/** What the worker added to the record over the build (error, attempts, worker, …): patched in at the final status. */
function finalPatch(template: BuildRecord): Partial<BuildRecord> {
  const { id: _id, status: _status, config: _config, createdAt: _createdAt, updatedAt: _updatedAt, timestamps: _timestamps, requestKey: _requestKey, submitter: _submitter, ...patch } = template;
  return patch;
}

/**
 * Replays `template`'s life `count` times under new ids through the store: the API's create,
 * then each status transition and log append in the template's order, the final one carrying
 * what the worker added to the record, so each copy ends as the real build did (record with
 * retention, bounded event stream, index entry, in-flight marker released).
 * `stores` spread the builds over several connections (each store serialises its own updates).
 */
export async function seedFinished(stores: BuildStore[], template: FinishedTemplate, count: number): Promise<void> {
  const patch = finalPatch(template.record);
  await forEachIndex(count, async (index) => {
    const store = stores[index % stores.length]!;
    const now = Date.now();
    const id = newBuildId(now);
    await store.createOrAttach(queuedRecord(template.record, id, now));
    for (const event of template.events.slice(1)) {
      if (event.type === "status") await store.transition(id, event.status, isTerminal(event.status) ? patch : {});
      else await store.appendEvent(id, { ...event, at: new Date().toISOString() });
    }
  });
}

/**
 * Writes `count` builds in their final state, one create-script call each (record, index entry,
 * first event), createdAt `spacingMs` apart going back from now: a history to page through.
 */
export async function seedHistory(store: BuildStore, template: BuildRecord, count: number, spacingMs: number): Promise<void> {
  const newest = Date.now();
  await forEachIndex(count, async (index) => {
    const createdAtMs = newest - index * spacingMs;
    const { requestKey: _requestKey, ...record } = { ...template, id: newBuildId(createdAtMs), createdAt: new Date(createdAtMs).toISOString() };
    await store.createOrAttach(record);
  });
}

/**
 * Queues `count` builds as POST /builds does (create script, then queue.add with the API's job
 * options), without HTTP: the state a busy API leaves for its workers. Returns their ids.
 */
export async function seedQueued(store: BuildStore, queue: Queue<BuildJobData>, template: BuildRecord, config: BuildConfig, count: number): Promise<string[]> {
  const ids: string[] = [];
  await forEachIndex(count, async () => {
    const now = Date.now();
    const id = newBuildId(now);
    await store.createOrAttach(queuedRecord({ ...template, config }, id, now));
    await queue.add(BUILD_JOB_NAME, { buildId: id, config }, { ...DEFAULT_BUILD_JOB_OPTIONS, jobId: id });
    ids.push(id);
  });
  return ids;
}

/** Every key matching `pattern` (SCAN, so Redis is never blocked). */
export async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1_000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== "0");
  return keys;
}

/** Bytes under a prefix by kind of key: build records, event streams, the index, anything else. */
export interface PrefixMemory {
  keys: number;
  bytes: number;
  records: number;
  events: number;
  index: number;
  other: number;
}

/** Keys and bytes under a prefix: the sum of `MEMORY USAGE <key> SAMPLES 0` (every element counted). */
export async function prefixMemory(redis: Redis, prefix: string): Promise<PrefixMemory> {
  const keys = await scanKeys(redis, `${prefix}*`);
  const memory: PrefixMemory = { keys: keys.length, bytes: 0, records: 0, events: 0, index: 0, other: 0 };
  const kindOf = (key: string): "records" | "events" | "index" | "other" =>
    key === `${prefix}builds` ? "index" : !key.startsWith(`${prefix}build:`) ? "other" : key.endsWith(":events") ? "events" : "records";
  for (let start = 0; start < keys.length; start += 1_000) {
    const batch = keys.slice(start, start + 1_000);
    const pipeline = redis.pipeline();
    for (const key of batch) pipeline.call("MEMORY", "USAGE", key, "SAMPLES", "0");
    for (const [index, [error, value]] of ((await pipeline.exec()) ?? []).entries()) {
      if (error || typeof value !== "number") continue;
      memory.bytes += value;
      memory[kindOf(batch[index]!)] += value;
    }
  }
  return memory;
}

/** Deletes every key under a prefix (UNLINK: freed in the background). */
export async function deletePrefix(redis: Redis, prefix: string): Promise<number> {
  const keys = await scanKeys(redis, `${prefix}*`);
  for (let start = 0; start < keys.length; start += 1_000) await redis.unlink(...keys.slice(start, start + 1_000));
  return keys.length;
}
