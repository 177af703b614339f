import { API_TOKEN_NAME_PATTERN, BUILD_ID_PATTERN, BUILD_STATUSES, type BuildRecord, type BuildStatus, type HistoryPosition } from "@m1l0/config";
import { text } from "node:stream/consumers";
import { artifactKeys, type ArtifactStore } from "./artifacts.js";

/**
 * The archive's newest-first index. S3 lists keys only in ascending byte order, so each
 * archived record also gets small marker objects (each holds the record's key) whose names
 * sort newest first:
 *
 *   records-by-time/all/<bucket>/<inverted ms>_<id>!
 *   records-by-time/status/<status>/<bucket>/<inverted ms>_<id>!
 *   records-by-time/submitter/<token name>/all/<bucket>/<inverted ms>_<id>!
 *   records-by-time/submitter/<token name>/status/<status>/<bucket>/<inverted ms>_<id>!
 *
 * `<inverted ms>` is 9999999999999 − createdAt in ms, 13 digits, so newer builds list first;
 * among builds of the same millisecond ids ascend. The closing `!` sorts below every character
 * an id may hold, so an id that is a prefix of another (`a`, `a-b`) still sorts first, in S3
 * and in stores that order by file name alike. `<bucket>` is the first 5 digits of the
 * inverted time (about 28 hours a bucket): it changes nothing in S3's order, and lets stores
 * made of folders (the local one, s3rver) skip whole days before a cursor instead of reading
 * one ever-growing folder. One prefix per filter keeps a filtered page as cheap as an
 * unfiltered one: a page is one or two list calls (StartAfter = the cursor's key) plus a GET
 * per record, whatever the size of the archive.
 */
export const RECORD_INDEX_ROOT = "records-by-time/";

/** createdAt values up to this (the year 2286) fit the 13-digit inverted time */
const MAX_MS = 9_999_999_999_999;
/** leading digits of the inverted time that name its folder (10^8 ms, about 28 hours) */
const BUCKET_DIGITS = 5;

export interface RecordIndexFilter {
  status?: BuildStatus;
  /** the token name that submitted the build */
  submitter?: string;
}

/** The index prefix holding exactly the records that pass `filter`. */
export function recordIndexPrefix(filter: RecordIndexFilter = {}): string {
  // no prefix contains another one (`…/all/` beside `…/status/<s>/`)
  const owner = filter.submitter === undefined ? "" : `submitter/${filter.submitter}/`;
  const status = filter.status === undefined ? "all/" : `status/${filter.status}/`;
  return `${RECORD_INDEX_ROOT}${owner}${status}`;
}

export function recordIndexKey(prefix: string, position: HistoryPosition): string {
  const inverted = String(MAX_MS - position.createdAtMs).padStart(13, "0");
  return `${prefix}${inverted.slice(0, BUCKET_DIGITS)}/${inverted}_${position.id}!`;
}

/** The position named by an index key under `prefix`; undefined for anything else. */
export function parseRecordIndexKey(prefix: string, key: string): HistoryPosition | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const match = /^(\d{5})\/(\d{13})_(.+)!$/.exec(key.slice(prefix.length));
  if (!match || !match[2]!.startsWith(match[1]!) || !BUILD_ID_PATTERN.test(match[3]!)) return undefined;
  return { createdAtMs: MAX_MS - Number(match[2]), id: match[3]! };
}

/** Every index key of one record (the same keys each time: rewriting them is harmless). */
export function recordIndexKeys(record: Pick<BuildRecord, "id" | "createdAt" | "status" | "submitter">): string[] {
  const createdAtMs = Date.parse(record.createdAt);
  if (!BUILD_ID_PATTERN.test(record.id) || !Number.isInteger(createdAtMs) || createdAtMs < 0 || createdAtMs > MAX_MS) return [];
  const position = { createdAtMs, id: record.id };
  const filters: RecordIndexFilter[] = [{}];
  const status = (BUILD_STATUSES as readonly string[]).includes(record.status) ? record.status : undefined;
  if (status) filters.push({ status });
  // token names are key-safe by their pattern; anything else cannot be asked for by a token
  if (record.submitter !== undefined && API_TOKEN_NAME_PATTERN.test(record.submitter)) {
    filters.push({ submitter: record.submitter });
    if (status) filters.push({ submitter: record.submitter, status });
  }
  return filters.map((filter) => recordIndexKey(recordIndexPrefix(filter), position));
}

/**
 * Archives a final record: the record itself first, then its index keys, so an index key never
 * names a record that is not there. Idempotent (at-least-once delivery may run it twice).
 */
export async function archiveRecord(artifacts: ArtifactStore, record: BuildRecord): Promise<void> {
  await artifacts.put(artifactKeys.record(record.id), JSON.stringify(record, null, 2), "application/json");
  await writeIndexKeys(artifacts, record);
}

async function writeIndexKeys(artifacts: ArtifactStore, record: BuildRecord): Promise<number> {
  const keys = recordIndexKeys(record);
  // the body names the record it indexes (and is never empty: S3 clients warn about bodies of unknown length)
  await Promise.all(keys.map((key) => artifacts.put(key, artifactKeys.record(record.id), "text/plain")));
  return keys.length;
}

export interface ReindexProgress {
  /** records/<id>.json objects read */
  records: number;
  /** of those, unreadable or not a record (left alone) */
  skipped: number;
}

/**
 * The migration for archives written before the index existed: reads every records/<id>.json
 * and writes its index keys. Safe to run again, and alongside workers that archive meanwhile.
 * Costs one list call per 1,000 records plus a GET and a few PUTs per record, once.
 */
export async function reindexArchivedRecords(
  artifacts: ArtifactStore,
  options: { concurrency?: number; onProgress?: (progress: ReindexProgress) => void } = {},
): Promise<ReindexProgress> {
  const progress: ReindexProgress = { records: 0, skipped: 0 };
  const concurrency = options.concurrency ?? 16;
  let startAfter: string | undefined;
  for (;;) {
    const keys = await artifacts.listKeys(artifactKeys.recordsPrefix, { limit: 1000, ...(startAfter ? { startAfter } : {}) });
    const queue = keys.filter((key) => key.endsWith(".json"));
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        for (let key = queue.shift(); key !== undefined; key = queue.shift()) {
          progress.records += 1;
          const record = await readRecord(artifacts, key);
          if (!record || (await writeIndexKeys(artifacts, record)) === 0) progress.skipped += 1;
        }
      }),
    );
    options.onProgress?.(progress);
    if (keys.length < 1000) return progress;
    startAfter = keys[keys.length - 1];
  }
}

async function readRecord(artifacts: ArtifactStore, key: string): Promise<BuildRecord | undefined> {
  const body = await artifacts.get(key);
  if (!body) return undefined;
  try {
    const record = JSON.parse(await text(body)) as BuildRecord;
    return typeof record.id === "string" && typeof record.createdAt === "string" ? record : undefined;
  } catch {
    return undefined; // not JSON: not ours to index
  }
}
