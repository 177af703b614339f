import type { BuildRecord } from "@m1l0/config";
import { BuildStore, createRedis } from "@m1l0/queue";
import { LocalArtifactStore, artifactKeys, recordIndexKeys, type ArtifactStore, type ListKeysOptions } from "@m1l0/storage";
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
import { ArtifactArchiver } from "../src/artifacts.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const prefix = `test:${randomUUID()}:`;
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-archiver-test-"));
const spoolDir = path.join(dir, "spool");
let redis: Redis;
let builds: BuildStore;

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
    const archiver = new ArtifactArchiver({ artifacts: store, builds, spoolDir, logger: pino({ level: "silent" }), retry: { initialDelayMs: 10, maxDelayMs: 20 } });
    const id = await newBuild();
    const chunks = Array.from({ length: 8 }, () => randomBytes(300 * 1024));
    const capture = archiver.captureContext(id, Readable.from(chunks));
    const passed = await buffer(capture.stream);
    expect(passed.equals(Buffer.concat(chunks))).toBe(true);
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
    const archiver = new ArtifactArchiver({ artifacts: store, builds, spoolDir, logger: pino({ level: "silent" }) });
    const content = randomBytes(4096);
    for (let i = 0; i < 2; i++) {
      const id = await newBuild();
      const capture = archiver.captureContext(id, Readable.from([content]));
      await buffer(capture.stream);
      await capture.finish();
      await until(async () => ((await builds.get(id))?.artifacts?.context === "uploaded" ? true : undefined));
    }
    expect(store.puts).toBe(1);
    await archiver.close();
  });

  it("archives nothing when Docker stopped reading the context early", async () => {
    const local = new LocalArtifactStore(path.join(dir, "store-3"));
    const archiver = new ArtifactArchiver({ artifacts: local, builds, spoolDir, logger: pino({ level: "silent" }) });
    const id = await newBuild();
    const capture = archiver.captureContext(id, Readable.from(Array.from({ length: 64 }, () => randomBytes(64 * 1024))));
    capture.stream.read(); // Docker refused the build after the first bytes
    expect(await capture.finish()).toBeUndefined();
    expect((await builds.get(id))?.contextDigest).toBeUndefined();
    expect(await local.listKeys("contexts/", { limit: 10 })).toEqual([]);
    expect(readdirSync(spoolDir)).toEqual([]);
    await archiver.close();
  });
});
