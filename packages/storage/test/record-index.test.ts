import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { compareHistoryPositions, historyPositionOf, type BuildRecord, type BuildStatus } from "@m1l0/config";
import { afterAll, describe, expect, it } from "vitest";
import {
  LocalArtifactStore,
  S3ArtifactStore,
  archiveRecord,
  artifactKeys,
  createS3Client,
  deleteObject,
  parseRecordIndexKey,
  recordIndexKeys,
  recordIndexPrefix,
  reindexArchivedRecords,
  type ArtifactStore,
} from "../src/index.js";

const endpoint = process.env.S3_ENDPOINT ?? "http://127.0.0.1:4569";
const bucket = process.env.S3_BUCKET ?? "m1l0-builds";
const client = createS3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
const s3Prefix = `test/record-index/${randomUUID()}/`;
const localDir = mkdtempSync(path.join(tmpdir(), "m1l0-record-index-test-"));
const s3 = new S3ArtifactStore(client, bucket, s3Prefix);

afterAll(async () => {
  // s3rver removes a folder with its last object, and two deletes racing for that answer 500:
  // ignore those and go again over what is left
  for (let round = 0, keys = await everyKey(s3, ""); keys.length && round < 10; round++, keys = await everyKey(s3, "")) {
    await Promise.all(keys.map((key) => deleteObject(client, bucket, s3Prefix + key).catch(() => undefined)));
  }
  client.destroy();
  rmSync(localDir, { recursive: true, force: true });
});

async function everyKey(store: ArtifactStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for (;;) {
    const page = await store.listKeys(prefix, { limit: 1000, ...(keys.length ? { startAfter: keys[keys.length - 1]! } : {}) });
    keys.push(...page);
    if (page.length < 1000) return keys;
  }
}

function record(id: string, createdAt: string, status: BuildStatus, submitter?: string): BuildRecord {
  return {
    id,
    status,
    config: { service: "dockerhub", repository: "m1l0/x", source: "https://git.example.com/x.git" } as BuildRecord["config"],
    createdAt,
    updatedAt: createdAt,
    timestamps: { queued: createdAt, [status]: createdAt },
    attempts: 1,
    ...(submitter ? { submitter } : {}),
  };
}

it("index keys sort newest first, ids ascending within a millisecond (prefix ids included)", () => {
  const positions = [
    { createdAtMs: 1_000, id: "b" },
    { createdAtMs: 2_000, id: "a-b" },
    { createdAtMs: 2_000, id: "a" },
    { createdAtMs: 2_000, id: "a.b" },
    { createdAtMs: 2_000, id: "A" },
    { createdAtMs: 1_799_999_999_999, id: "z" },
    { createdAtMs: 0, id: "a" },
  ];
  const prefix = recordIndexPrefix();
  const byKey = positions.map((p) => recordIndexKeys(record(p.id, new Date(p.createdAtMs).toISOString(), "failed"))[0]!).sort();
  expect(byKey.map((key) => parseRecordIndexKey(prefix, key))).toEqual([...positions].sort(compareHistoryPositions));
  expect(parseRecordIndexKey(prefix, `${prefix}garbage`)).toBeUndefined();
  // the folder must be the first digits of the time it holds
  expect(parseRecordIndexKey(prefix, `${prefix}00000/8200000000000_a!`)).toBeUndefined();
  expect(parseRecordIndexKey(prefix, `${prefix}82000/8200000000000_a!`)).toEqual({ createdAtMs: 1_799_999_999_999, id: "a" });
  expect(parseRecordIndexKey(prefix, "records/x.json")).toBeUndefined();
});

it("a record gets one key per filter it can be asked for", () => {
  const keys = recordIndexKeys(record("bld_1", "2026-01-01T00:00:00.000Z", "failed", "alice"));
  expect(keys.map((key) => key.replace(/\d{5}\/\d{13}_bld_1!$/, ""))).toEqual([
    "records-by-time/all/",
    "records-by-time/status/failed/",
    "records-by-time/submitter/alice/all/",
    "records-by-time/submitter/alice/status/failed/",
  ]);
  // no submitter (auth disabled), or one no token can be named: not indexed by owner
  expect(recordIndexKeys(record("bld_2", "2026-01-01T00:00:00.000Z", "succeeded"))).toHaveLength(2);
  expect(recordIndexKeys(record("bld_3", "2026-01-01T00:00:00.000Z", "succeeded", "../evil"))).toHaveLength(2);
  expect(recordIndexKeys(record("bld_4", "not a date", "succeeded"))).toEqual([]);
});

describe.each([
  ["S3 (s3rver)", s3],
  ["local folder", new LocalArtifactStore(localDir)],
] as Array<[string, ArtifactStore]>)("record index: %s", (_name, store) => {
  const base = Date.parse("2026-06-01T00:00:00.000Z");
  const records = [
    record("bld_a", new Date(base + 3_000).toISOString(), "succeeded", "alice"),
    record("bld_b", new Date(base + 3_000).toISOString(), "failed", "bob"),
    record("bld_b-1", new Date(base + 3_000).toISOString(), "failed", "alice"),
    record("bld_c", new Date(base + 1_000).toISOString(), "failed", "alice"),
    record("bld_d", new Date(base + 2_000).toISOString(), "cancelled"),
    // other days: other folders of the index
    record("bld_e", new Date(base - 3 * 86_400_000).toISOString(), "failed", "alice"),
    record("bld_f", new Date(base + 2 * 86_400_000).toISOString(), "succeeded", "bob"),
    record("bld_g", new Date(base + 40 * 86_400_000).toISOString(), "failed", "alice"),
  ];
  const newestFirst = (list: BuildRecord[]) => list.map(historyPositionOf).sort(compareHistoryPositions);

  it("archiveRecord writes the record and its index; each prefix lists its records newest first", async () => {
    for (const item of records) await archiveRecord(store, item);
    await archiveRecord(store, records[0]!); // delivered twice: nothing changes
    const listed = async (filter: Parameters<typeof recordIndexPrefix>[0]) => {
      const prefix = recordIndexPrefix(filter);
      return (await everyKey(store, prefix)).map((key) => parseRecordIndexKey(prefix, key));
    };
    expect(await listed({})).toEqual(newestFirst(records));
    expect(await listed({ status: "failed" })).toEqual(newestFirst(records.filter((r) => r.status === "failed")));
    expect(await listed({ submitter: "alice" })).toEqual(newestFirst(records.filter((r) => r.submitter === "alice")));
    expect(await listed({ submitter: "alice", status: "failed" })).toEqual(newestFirst(records.filter((r) => r.submitter === "alice" && r.status === "failed")));
    expect(await store.exists(artifactKeys.record("bld_b-1"))).toBe(true);
    // paging with StartAfter = the last key seen
    const prefix = recordIndexPrefix();
    const paged: string[] = [];
    for (let page = await store.listKeys(prefix, { limit: 2 }); page.length; page = await store.listKeys(prefix, { limit: 2, startAfter: paged[paged.length - 1]! })) paged.push(...page);
    expect(paged.map((key) => parseRecordIndexKey(prefix, key))).toEqual(newestFirst(records));
    expect(new Set(paged.map((key) => key.slice(prefix.length, prefix.length + 5))).size).toBeGreaterThanOrEqual(4);
  });

  it("reindexArchivedRecords indexes records archived before the index existed, and skips what is not a record", async () => {
    const old = [record("bld_old1", "2020-01-01T00:00:00.000Z", "succeeded", "carol"), record("bld_old2", "2020-01-02T00:00:00.000Z", "failed", "carol")];
    for (const item of old) await store.put(artifactKeys.record(item.id), JSON.stringify(item));
    await store.put(artifactKeys.record("bld_broken"), "{not json");
    const ownerPrefix = recordIndexPrefix({ submitter: "carol" });
    expect(await everyKey(store, ownerPrefix)).toEqual([]);
    const progress = await reindexArchivedRecords(store);
    expect(progress).toEqual({ records: records.length + old.length + 1, skipped: 1 });
    expect((await everyKey(store, ownerPrefix)).map((key) => parseRecordIndexKey(ownerPrefix, key))).toEqual(newestFirst(old));
    expect(await everyKey(store, recordIndexPrefix())).toHaveLength(records.length + old.length);
  });
});
