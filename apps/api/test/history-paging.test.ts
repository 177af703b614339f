import { loadCatalog } from "@m1l0/catalog";
import { buildConfigSchema, compareHistoryPositions, createApiToken, historyPositionOf, type BuildRecord, type BuildStatus } from "@m1l0/config";
import { BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { S3ArtifactStore, archiveRecord, createS3Client, deleteObject, type ArtifactStore, type ListKeysOptions, type MultipartPart } from "@m1l0/storage";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Authenticator, BuildService, buildApp } from "../src/index.js";

/**
 * GET /builds across the Redis/S3 boundary, against real Redis and a real S3 server (s3rver):
 * more archived records than one S3 list answers (1,000), plus builds only Redis has, plus
 * builds in both. M1L0_HISTORY_ARCHIVED=10000 makes it the page-time measurement of issue 12.
 */
const ARCHIVED = Number(process.env.M1L0_HISTORY_ARCHIVED ?? 1_100);
/** set by scripts/bench-history.sh, whose private S3 server is thrown away afterwards (s3rver deletes slowly in big folders) */
const DISPOSABLE_S3 = process.env.M1L0_HISTORY_DISPOSABLE_S3 === "1";
const BIG = ARCHIVED > 2_000;
/** a full walk is ~ARCHIVED / 200 pages, each up to a second or two on a busy machine */
const WALK_TIMEOUT = BIG ? 1_800_000 : 180_000;
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const S3_ENDPOINT = process.env.S3_ENDPOINT ?? "http://127.0.0.1:4569";
const S3_BUCKET = process.env.S3_BUCKET ?? "m1l0-builds";
const queueName = `test-history-${randomUUID()}`;
const prefix = `test:${randomUUID()}:`;
const s3Prefix = `test/history-paging/${randomUUID()}/`;
const s3 = createS3Client({ endpoint: S3_ENDPOINT, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });

const admin = createApiToken("ops", "admin");
const alice = createApiToken("alice", "user");
const bob = createApiToken("bob", "user");
const bearer = (t: { token: string }) => ({ authorization: `Bearer ${t.token}` });
const TERMINAL: BuildStatus[] = ["succeeded", "failed", "cancelled", "cached"];
const config = buildConfigSchema.parse({ service: "dockerhub", repository: "m1l0/history", source: "https://git.example.com/history.git" });

/** Forwards to the real S3 store, counting calls: what one page costs. */
class CountingStore implements ArtifactStore {
  lists = 0;
  gets = 0;
  /** time spent waiting for list calls (they run one after another within a page) */
  listMs = 0;
  constructor(private readonly inner: ArtifactStore) {}
  get location() {
    return this.inner.location;
  }
  exists(key: string) {
    return this.inner.exists(key);
  }
  put(key: string, body: Readable | Buffer | string, contentType?: string) {
    return this.inner.put(key, body, contentType);
  }
  get(key: string) {
    this.gets += 1;
    return this.inner.get(key);
  }
  async listKeys(listPrefix: string, options: ListKeysOptions) {
    this.lists += 1;
    const started = performance.now();
    try {
      return await this.inner.listKeys(listPrefix, options);
    } finally {
      this.listMs += performance.now() - started;
    }
  }
  startMultipart(key: string, contentType?: string) {
    return this.inner.startMultipart(key, contentType);
  }
  putPart(key: string, uploadId: string, partNumber: number, body: Buffer) {
    return this.inner.putPart(key, uploadId, partNumber, body);
  }
  completeMultipart(key: string, uploadId: string, parts: readonly MultipartPart[]) {
    return this.inner.completeMultipart(key, uploadId, parts);
  }
}

const artifacts = new CountingStore(new S3ArtifactStore(s3, S3_BUCKET, s3Prefix));
let redis: Redis;
let queue: Queue<BuildJobData>;
let store: BuildStore;
let app: FastifyInstance;
/** every build this test made: what the history must list */
const all: BuildRecord[] = [];

function record(id: string, createdAtMs: number, status: BuildStatus, submitter: string | undefined, worker: string): BuildRecord {
  const at = new Date(createdAtMs).toISOString();
  return { id, status, config, createdAt: at, updatedAt: at, timestamps: { queued: at, [status]: at }, attempts: 1, worker, ...(submitter ? { submitter } : {}) };
}

async function inParallel<T>(items: T[], concurrency: number, run: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) await run(items[next++]!);
  }));
}

const owners = ["alice", "bob", undefined] as const;

beforeAll(async () => {
  redis = createRedis(REDIS_URL, "producer");
  queue = new Queue<BuildJobData>(queueName, { connection: redis });
  store = new BuildStore(redis, prefix);
  const builds = new BuildService(store, queue, loadCatalog(), { allowHttp: false, allowDir: false });
  app = await buildApp({ auth: Authenticator.withTokens([admin.entry, alice.entry, bob.entry]), builds, store, redis, queue, artifacts });

  // archived only (Redis forgot them long ago): from a year back, one every 5 minutes (so over
  // several days: several folders of the index); every 7th shares its millisecond with the one before
  const base = Date.now() - 365 * 24 * 3600 * 1000;
  const archivedOnly: BuildRecord[] = [];
  for (let i = 0; i < ARCHIVED; i++) {
    const ms = base + (i % 7 === 6 ? i - 1 : i) * 300_000;
    archivedOnly.push(record(`bld_arch${String(ARCHIVED - i).padStart(6, "0")}${randomUUID().slice(0, 4)}`, ms, TERMINAL[i % 4]!, owners[i % 3], "archive"));
  }
  await inParallel(archivedOnly, 32, (item) => archiveRecord(artifacts, item));
  all.push(...archivedOnly);

  // in Redis and archived (finished within retention): Redis's copy says worker "live"
  const recent = Date.now() - 3600 * 1000;
  for (let i = 0; i < 30; i++) {
    const live = record(`bld_both${i}${randomUUID().slice(0, 4)}`, recent + i * 60_000, TERMINAL[i % 4]!, owners[i % 3], "live");
    expect(await store.create(live)).toBe(true);
    await archiveRecord(artifacts, { ...live, worker: "archive" });
    all.push(live);
  }
  // archived, and Redis's record expired while its index entry stays
  for (let i = 0; i < 5; i++) {
    const gone = record(`bld_expired${i}${randomUUID().slice(0, 4)}`, recent + i * 60_000 + 30_000, "succeeded", owners[i % 3], "archive");
    await store.create(gone);
    await archiveRecord(artifacts, gone);
    await redis.del(`${prefix}build:${gone.id}`);
    all.push(gone);
  }
  // only in Redis: running or queued, never archived
  for (let i = 0; i < 20; i++) {
    const status: BuildStatus = i % 2 ? "building" : "queued";
    const running = record(`bld_live${i}${randomUUID().slice(0, 4)}`, recent + i * 90_000 + 1, status, owners[i % 3], "live");
    expect(await store.create(running)).toBe(true);
    all.push(running);
  }
}, BIG ? 3_600_000 : 300_000);

afterAll(async () => {
  await app?.close();
  await queue?.obliterate({ force: true });
  await queue?.close();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis?.disconnect();
  const inner = new S3ArtifactStore(s3, S3_BUCKET, s3Prefix);
  // s3rver removes a folder with its last object, and two deletes racing for that answer 500:
  // ignore those and go again over what is left
  for (let round = 0, page = DISPOSABLE_S3 ? [] : await inner.listKeys("", { limit: 1000 }); page.length && round < 1_000; round++, page = await inner.listKeys("", { limit: 1000 })) {
    await inParallel(page, 32, (key) => deleteObject(s3, S3_BUCKET, s3Prefix + key).catch(() => undefined));
  }
  s3.destroy();
}, 600_000);

const newestFirst = (records: BuildRecord[]) => records.map(historyPositionOf).sort(compareHistoryPositions).map((p) => p.id);

interface Walk {
  ids: string[];
  builds: BuildRecord[];
  /** per page: ms, S3 list calls, S3 GETs */
  pages: Array<{ ms: number; lists: number; gets: number }>;
}

async function walk(query: string, who: { token: string }, limit: number): Promise<Walk> {
  const result: Walk = { ids: [], builds: [], pages: [] };
  let cursor: string | null = null;
  for (let n = 0; n < 10_000; n++) {
    const [lists, gets, started] = [artifacts.lists, artifacts.gets, performance.now()];
    const url: string = `/builds?limit=${limit}${query}${cursor ? `&cursor=${cursor}` : ""}`;
    const response = await app.inject({ method: "GET", url, headers: bearer(who) });
    result.pages.push({ ms: performance.now() - started, lists: artifacts.lists - lists, gets: artifacts.gets - gets });
    expect(response.statusCode, response.body).toBe(200);
    const body = response.json() as { builds: BuildRecord[]; nextCursor: string | null };
    expect(body.builds.length).toBeLessThanOrEqual(limit);
    result.builds.push(...body.builds);
    result.ids.push(...body.builds.map((b) => b.id));
    cursor = body.nextCursor;
    if (cursor === null) return result;
    expect(body.builds.length).toBe(limit); // only the last page may be short
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
  }
  throw new Error("the listing never ended");
}

function expectCheapPages(pages: Walk["pages"], limit: number): void {
  for (const page of pages) {
    // a page never scans the archive: a couple of list calls and at most one GET per build on it
    expect(page.lists).toBeLessThanOrEqual(3);
    expect(page.gets).toBeLessThanOrEqual(limit + 1);
  }
}

describe("GET /builds pages through Redis and the S3 archive", () => {
  it("lists every build exactly once, newest first, page after page (admin)", async () => {
    const expected = newestFirst(all);
    const result = await walk("", admin, 200);
    expect(result.ids.length).toBe(expected.length);
    expect(new Set(result.ids).size).toBe(result.ids.length);
    expect(result.ids).toEqual(expected);
    expect(result.pages.length).toBe(Math.ceil(expected.length / 200));
    expectCheapPages(result.pages, 200);
    // a build both in Redis and in S3 comes from Redis (the current copy)
    for (const build of result.builds.filter((b) => b.id.startsWith("bld_both"))) expect(build.worker).toBe("live");
    const times = result.pages.map((p) => p.ms.toFixed(0));
    console.log(`[history] ${all.length} builds (${ARCHIVED} archive-only), limit 200: ${result.pages.length} pages, ms per page: ${times.join(" ")}`);

    // one page of the default size (50), at the newest end, in the middle and at the oldest end of the archive
    const cursorAt = (index: number) => Buffer.from(JSON.stringify({ v: 1, t: historyPositionOf(result.builds[index]!).createdAtMs, id: result.ids[index] })).toString("base64url");
    for (const [where, cursor] of [["newest", undefined], ["middle", cursorAt(Math.floor(expected.length / 2))], ["oldest", cursorAt(expected.length - 60)]] as const) {
      const samples: number[] = [];
      const listing: number[] = [];
      for (let i = 0; i < 5; i++) {
        const [lists, listMs, started] = [artifacts.lists, artifacts.listMs, performance.now()];
        const response = await app.inject({ method: "GET", url: `/builds${cursor ? `?cursor=${cursor}` : ""}`, headers: bearer(admin) });
        samples.push(performance.now() - started);
        listing.push(artifacts.listMs - listMs);
        expect(response.json().builds).toHaveLength(50);
        expect(artifacts.lists - lists).toBeLessThanOrEqual(3);
      }
      samples.sort((a, b) => a - b);
      listing.sort((a, b) => a - b);
      console.log(
        `[history] one page of 50 ${where === "middle" ? "in the middle" : `at the ${where} end`} of ${ARCHIVED} archived builds: median ${samples[2]!.toFixed(1)} ms (min ${samples[0]!.toFixed(1)}, max ${samples[4]!.toFixed(1)}), of which S3 list calls ${listing[2]!.toFixed(1)} ms`,
      );
    }
  }, WALK_TIMEOUT);

  it("applies the status filter and the owner filter (a user token sees its own builds only)", async () => {
    const failed = await walk("&status=failed", admin, 100);
    expect(failed.ids).toEqual(newestFirst(all.filter((b) => b.status === "failed")));
    expectCheapPages(failed.pages, 100);

    const own = await walk("", alice, 150);
    expect(own.ids).toEqual(newestFirst(all.filter((b) => b.submitter === "alice")));
    expectCheapPages(own.pages, 150);

    const ownRunning = await walk("&status=building", bob, 5);
    expect(ownRunning.ids).toEqual(newestFirst(all.filter((b) => b.submitter === "bob" && b.status === "building")));
    const ownCached = await walk("&status=cached", alice, 50);
    expect(ownCached.ids).toEqual(newestFirst(all.filter((b) => b.submitter === "alice" && b.status === "cached")));
    expect(ownCached.ids.length).toBeGreaterThan(50);
  }, WALK_TIMEOUT);

  it("stays stable while new builds arrive: later pages neither repeat nor skip", async () => {
    const expected = newestFirst(all);
    const first = await app.inject({ method: "GET", url: "/builds?limit=100", headers: bearer(admin) });
    const { builds, nextCursor } = first.json() as { builds: BuildRecord[]; nextCursor: string };
    // new builds land meanwhile, in Redis and (finished) in the archive
    const arrivals: BuildRecord[] = [];
    for (let i = 0; i < 3; i++) {
      const fresh = record(`bld_new${i}${randomUUID().slice(0, 4)}`, Date.now() + i, "succeeded", "alice", "live");
      await store.create(fresh);
      await archiveRecord(artifacts, fresh);
      arrivals.push(fresh);
    }
    const seen = builds.map((b) => b.id);
    let cursor: string | null = nextCursor;
    while (cursor) {
      const page = (await app.inject({ method: "GET", url: `/builds?limit=500&cursor=${cursor}`, headers: bearer(admin) })).json() as { builds: BuildRecord[]; nextCursor: string | null };
      seen.push(...page.builds.map((b) => b.id));
      cursor = page.nextCursor;
    }
    expect(seen).toEqual(expected);
    const fresh = (await app.inject({ method: "GET", url: "/builds?limit=3", headers: bearer(admin) })).json() as { builds: BuildRecord[] };
    expect(fresh.builds.map((b) => b.id)).toEqual(newestFirst(arrivals));
    await Promise.all(arrivals.map((a) => store.discard(a.id)));
    all.push(...arrivals);
  }, WALK_TIMEOUT);

  it("refuses a cursor it did not issue with a 400 naming cursor", async () => {
    const forged = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
    for (const cursor of ["not a cursor", "%%%", forged({ v: 2, t: 1, id: "bld_x" }), forged({ v: 1, t: -5, id: "bld_x" }), forged({ v: 1, t: 1, id: "../x" }), forged([1]), "e30", "x".repeat(600)]) {
      const response = await app.inject({ method: "GET", url: `/builds?cursor=${encodeURIComponent(cursor)}`, headers: bearer(admin) });
      expect(response.statusCode, cursor).toBe(400);
      expect(response.json().error).toMatchObject({ code: "VALIDATION_FAILED", issues: [{ field: "cursor" }] });
    }
  });

  it("documents cursor and nextCursor in the OpenAPI document", async () => {
    const document = (await app.inject({ method: "GET", url: "/docs/json", headers: bearer(admin) })).json();
    const operation = document.paths["/builds"].get;
    expect(operation.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(["status", "limit", "cursor"]));
    expect(operation.responses["200"].content["application/json"].schema.properties.nextCursor).toMatchObject({ type: "string", nullable: true });
  });
});
