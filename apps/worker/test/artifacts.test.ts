import type { BuildRecord } from "@m1l0/config";
import type { ContextTap } from "@m1l0/context";
import { BuildStore, PendingUploads, createRedis } from "@m1l0/queue";
import { LocalArtifactStore, artifactKeys, recordIndexKeys, type ArtifactStore, type ListKeysOptions, type MultipartPart } from "@m1l0/storage";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { buffer, text } from "node:stream/consumers";
import { gunzipSync } from "node:zlib";
import { pino } from "pino";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ArtifactArchiver, type ArtifactArchiverOptions } from "../src/artifacts.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const prefix = `test:${randomUUID()}:`;
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-archiver-test-"));
const spoolDir = path.join(dir, "spool");
let redis: Redis;
let builds: BuildStore;
let uploads: PendingUploads;

/** An archiver as a worker on `host` makes one (real Redis, the given store). */
function archiverOf(artifacts: ArtifactStore, options: Partial<ArtifactArchiverOptions> = {}): ArtifactArchiver {
  return new ArtifactArchiver({ artifacts, builds, uploads, workerId: `w-${randomUUID().slice(0, 6)}`, host: "host-a", spoolDir, logger: pino({ level: "silent" }), ...options });
}

/** The real local store, made to fail its first `failures` writes (an S3 outage, in short). */
class FlakyStore implements ArtifactStore {
  readonly location = "flaky://";
  puts = 0;
  constructor(
    private readonly inner: LocalArtifactStore,
    private failures: number,
  ) {}
  exists(key: string) {
    return this.inner.exists(key);
  }
  async put(key: string, body: Readable | Buffer | string) {
    this.puts += 1;
    if (this.failures > 0) {
      this.failures -= 1;
      if (body instanceof Readable) body.destroy();
      throw new Error("connect ECONNREFUSED (simulated outage)");
    }
    return this.inner.put(key, body);
  }
  get(key: string) {
    return this.inner.get(key);
  }
  listKeys(listPrefix: string, options: ListKeysOptions) {
    return this.inner.listKeys(listPrefix, options);
  }
  /** while failing, every write fails: parts as much as whole objects */
  private refuse(): void {
    if (this.failures > 0) {
      this.failures -= 1;
      throw new Error("connect ECONNREFUSED (simulated outage)");
    }
  }
  async startMultipart(key: string) {
    this.refuse();
    return this.inner.startMultipart(key);
  }
  async putPart(key: string, uploadId: string, partNumber: number, body: Buffer) {
    this.puts += 1;
    this.refuse();
    return this.inner.putPart(key, uploadId, partNumber, body);
  }
  async completeMultipart(key: string, uploadId: string, parts: readonly MultipartPart[]) {
    this.refuse();
    return this.inner.completeMultipart(key, uploadId, parts);
  }
  /** an outage from now on, of `count` writes */
  fail(count: number): void {
    this.failures = count;
  }
}

async function newBuild(): Promise<string> {
  const id = `bld_test_${randomUUID().slice(0, 8)}`;
  const now = new Date().toISOString();
  const record = { id, status: "queued", config: {}, createdAt: now, updatedAt: now, timestamps: { queued: now }, attempts: 0 } as unknown as BuildRecord;
  await builds.create(record);
  return id;
}

async function until<T>(probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

beforeAll(async () => {
  redis = createRedis(REDIS_URL, "producer");
  builds = new BuildStore(redis, prefix);
  uploads = new PendingUploads(redis, prefix);
  mkdirSync(spoolDir, { recursive: true });
});

afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  rmSync(dir, { recursive: true, force: true });
});

describe("ArtifactArchiver", () => {
  it("passes the context through untouched, archives it gzipped under its sha256, and retries through an outage", async () => {
    const local = new LocalArtifactStore(path.join(dir, "store-1"));
    const store = new FlakyStore(local, 2);
    const archiver = archiverOf(store, { retry: { initialDelayMs: 10, maxDelayMs: 20 } });
    const id = await newBuild();
    const chunks = Array.from({ length: 8 }, () => randomBytes(300 * 1024));
    const capture = archiver.captureContext(id);
    await tapAll(capture.tap, chunks);
    const digest = await capture.finish();
    const hex = createHash("sha256").update(Buffer.concat(chunks)).digest("hex");
    expect(digest).toBe(`sha256:${hex}`);
    await builds.appendLog(id, "build", "Step 1/1 : FROM scratch");
    await builds.transition(id, "succeeded");
    archiver.archiveBuild(id);

    const record = await until(async () => {
      const current = await builds.get(id);
      return current?.artifacts?.record === "uploaded" ? current : undefined;
    });
    expect(record).toMatchObject({ contextDigest: `sha256:${hex}`, artifacts: { context: "uploaded", log: "uploaded", record: "uploaded" } });
    expect(store.puts).toBeGreaterThanOrEqual(5); // 2 failures + context, log, record
    const archived = gunzipSync(await buffer((await local.get(artifactKeys.context(hex)))!));
    expect(archived.equals(Buffer.concat(chunks))).toBe(true);
    const log = await text((await local.get(artifactKeys.log(id)))!);
    expect(log).toMatch(/\[status\] queued\n.*\[build\] Step 1\/1 : FROM scratch\n.*\[status\] succeeded\n$/);
    const archivedRecord = JSON.parse(await text((await local.get(artifactKeys.record(id)))!)) as BuildRecord;
    expect(archivedRecord).toMatchObject({ id, status: "succeeded" });
    // and its keys in the newest-first index GET /builds pages through
    const indexKeys = recordIndexKeys(archivedRecord);
    expect(indexKeys.length).toBeGreaterThanOrEqual(2);
    for (const key of indexKeys) expect(await local.exists(key)).toBe(true);
    expect(readdirSync(spoolDir)).toEqual([]); // the spooled archive is removed once stored
    await archiver.close();
  });

  it("does not re-upload a context that is already stored", async () => {
    const local = new LocalArtifactStore(path.join(dir, "store-2"));
    const store = new FlakyStore(local, 0);
    const archiver = archiverOf(store);
    const content = randomBytes(4096);
    for (let i = 0; i < 2; i++) {
      const id = await newBuild();
      const capture = archiver.captureContext(id);
      await tapAll(capture.tap, [content]);
      await capture.finish();
      await until(async () => ((await builds.get(id))?.artifacts?.context === "uploaded" ? true : undefined));
    }
    expect(store.puts).toBe(1);
    await archiver.close();
  });

  it("archives nothing when Docker stopped reading the context early", async () => {
    const local = new LocalArtifactStore(path.join(dir, "store-3"));
    const archiver = archiverOf(local);
    const id = await newBuild();
    const capture = archiver.captureContext(id);
    await capture.tap.write(randomBytes(64 * 1024)); // Docker refused the build after the first bytes: no end
    expect(await capture.finish()).toBeUndefined();
    expect((await builds.get(id))?.contextDigest).toBeUndefined();
    expect(await local.listKeys("contexts/", { limit: 10 })).toEqual([]);
    expect(readdirSync(spoolDir)).toEqual([]);
    await archiver.close();
  });
});

/** What the packer does with a tap: every chunk, waiting for each, then the end. */
async function tapAll(tap: ContextTap, chunks: Buffer[]): Promise<void> {
  for (const chunk of chunks) await tap.write(chunk);
  tap.end();
}

/** `count` numbered build lines through the store (and so through any spool attached to it). */
async function writeLines(store: BuildStore, id: string, count: number, from = 0): Promise<void> {
  const writes: Array<Promise<string>> = [];
  for (let i = from; i < from + count; i++) writes.push(store.appendLog(id, "build", `line-${String(i).padStart(6, "0")}`));
  await Promise.all(writes);
}

/** The numbers of the `line-N` lines of an archived log, in order. */
function numbered(log: string): number[] {
  return log.split("\n").flatMap((line) => {
    const match = / \[build\] line-(\d+)$/.exec(line);
    return match ? [Number(match[1])] : [];
  });
}

async function archivedLog(local: LocalArtifactStore, id: string): Promise<string> {
  await until(async () => ((await builds.get(id))?.artifacts?.record === "uploaded" ? true : undefined), 30_000);
  return text((await local.get(artifactKeys.log(id)))!);
}

describe("complete logs: spool, parts while running, a bounded Redis tail", () => {
  it("archives every line in order past the Redis tail, uploading parts while the build runs", async () => {
    const tailStore = new BuildStore(redis, prefix, { logTailEvents: 200 });
    const local = new LocalArtifactStore(path.join(dir, "store-long"));
    const archiver = archiverOf(local, { builds: tailStore, logPartBytes: 64 * 1024 });
    const id = await newBuild();
    await archiver.openLog(id);
    await writeLines(tailStore, id, 20_000);
    // parts go up while the build still runs (a crash would lose at most the one being filled)
    const parts = await until(async () => {
      const state = await uploads.get(id);
      return (state.multipart?.parts.length ?? 0) >= 10 ? state.multipart!.parts.length : undefined;
    });
    expect(parts).toBeGreaterThanOrEqual(10);
    await tailStore.transition(id, "succeeded");
    archiver.archiveBuild(id);
    const log = await archivedLog(local, id);
    expect(numbered(log)).toEqual(Array.from({ length: 20_000 }, (_, i) => i));
    expect(log).toMatch(/^\S+ \[status\] queued\n/);
    expect(log).toMatch(/\[status\] succeeded\n$/);
    expect(await redis.xlen(tailStore.keysOf(id)[1]!)).toBeLessThanOrEqual(300);
    expect(await uploads.isPending(id)).toBe(false);
    expect(readdirSync(spoolDir)).toEqual([]);
    await archiver.close();
  });

  it("a second attempt elsewhere on the host continues the first attempt's spool: every line once, in order", async () => {
    const tailStore = new BuildStore(redis, prefix, { logTailEvents: 100 });
    const local = new LocalArtifactStore(path.join(dir, "store-attempts"));
    const first = archiverOf(local, { builds: tailStore, logPartBytes: 32 * 1024 });
    const second = archiverOf(local, { builds: tailStore, logPartBytes: 32 * 1024 });
    const id = await newBuild();
    await first.openLog(id);
    await writeLines(tailStore, id, 2_000);
    await tailStore.transition(id, "queued"); // requeued (a retry, a shutdown): the attempt ends, its spool stays
    await first.sealLog(id);
    await second.openLog(id);
    await writeLines(tailStore, id, 2_000, 2_000);
    await tailStore.transition(id, "succeeded");
    second.archiveBuild(id);
    const log = await archivedLog(local, id);
    expect(numbered(log)).toEqual(Array.from({ length: 4_000 }, (_, i) => i));
    expect(log.match(/\[status\] queued/g)).toHaveLength(2);
    expect(readdirSync(spoolDir)).toEqual([]); // the first spool went once the second took it over
    await first.close();
    await second.close();
  });

  it("a worker gone before its uploads: another worker's sweep finishes them from its spool, never while the owner's lease lives", async () => {
    const local = new LocalArtifactStore(path.join(dir, "store-sweep"));
    const down = new FlakyStore(local, 1e9);
    const owner = archiverOf(down, { leaseMs: 60_000, retry: { initialDelayMs: 10, maxDelayMs: 20 } });
    const other = archiverOf(local, { leaseMs: 60_000 });
    const id = await newBuild();
    await owner.openLog(id);
    await writeLines(builds, id, 3_000);
    await builds.transition(id, "succeeded");
    owner.archiveBuild(id);
    // the owner is retrying its uploads against the outage
    await until(async () => ((await uploads.isPending(id)) && (await builds.get(id))?.artifacts?.log === "pending" ? true : undefined));
    expect(await other.sweep()).toEqual([]); // the owner holds the lease (and keeps retrying)
    await owner.close(0); // the owner stops: its lease goes, the uploads stay pending
    expect(await uploads.isPending(id)).toBe(true);
    expect((await builds.get(id))?.artifacts).toMatchObject({ log: "pending", record: "pending" });
    // taken once the owner's lease is gone
    await until(async () => ((await other.sweep()).includes(id) ? true : undefined));
    expect(numbered(await archivedLog(local, id))).toEqual(Array.from({ length: 3_000 }, (_, i) => i));
    expect((await builds.get(id))?.artifacts).toMatchObject({ log: "uploaded", record: "uploaded" });
    expect(await other.sweep()).not.toContain(id); // done: a later sweep leaves it alone
    await other.close();
  });

  it("from another host: the log is rebuilt from the uploaded parts and Redis's tail, and a gap is named, at most one part", async () => {
    const tailStore = new BuildStore(redis, prefix, { logTailEvents: 100 });
    const local = new LocalArtifactStore(path.join(dir, "store-far"));
    const partBytes = 32 * 1024;
    const owner = archiverOf(local, { builds: tailStore, logPartBytes: partBytes });
    const id = await newBuild();
    await owner.openLog(id);
    await writeLines(tailStore, id, 5_000);
    await until(async () => ((await uploads.get(id)).multipart?.parts.length ?? 0) >= 5 ? true : undefined);
    await owner.sealLog(id); // the owner's host is gone: its spool with it
    await tailStore.transition(id, "failed", { error: { code: "INTERNAL", message: "worker lost" } });
    await uploads.markPending(id);
    const elsewhere = archiverOf(local, { builds: tailStore, host: "host-b", logPartBytes: partBytes });
    expect(await elsewhere.sweep()).toContain(id);
    const log = await archivedLog(local, id);
    const numbers = numbered(log);
    // in order, no line twice, the end present
    expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
    expect(new Set(numbers).size).toBe(numbers.length);
    expect(numbers.at(-1)).toBe(4_999);
    expect(log).toMatch(/\[status\] failed: INTERNAL: worker lost\n$/);
    const missing = 5_000 - numbers.length;
    const perPart = Math.ceil(partBytes / "2026-01-01T00:00:00.000Z [build] line-000000\n".length);
    expect(missing).toBeLessThanOrEqual(perPart);
    if (missing > 0) expect(log).toMatch(/worker w-\S+ \(host host-a\), whose spool is not readable here, wrote after the last uploaded part were lost/);
    await owner.close();
    await elsewhere.close();
  });
});
