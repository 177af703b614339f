import { compareHistoryPositions, historyPositionOf, parseBuildConfig, type BuildRecord } from "@m1l0/config";
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { BuildStore, createRedis } from "../src/index.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const config = parseBuildConfig({ service: "dockerhub", repository: "me/app", source: "https://example.com/app.git" });
const prefix = `test:${randomUUID()}:`;
let redis: Redis;
let store: BuildStore;

beforeAll(() => {
  redis = createRedis(REDIS_URL, "worker");
  store = new BuildStore(redis, prefix);
});

afterAll(async () => {
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

async function collect(iterable: AsyncIterable<{ record: BuildRecord }>): Promise<string[]> {
  const ids: string[] = [];
  for await (const item of iterable) ids.push(item.record.id);
  return ids;
}

it("newestFirst walks Redis newest first, ids ascending within a millisecond, across batch ends, after a position", async () => {
  const base = Date.now() - 60_000;
  const records: BuildRecord[] = [];
  // 7 builds share one millisecond (more than a batch of 3), the rest are spread out
  for (let i = 0; i < 20; i++) {
    const at = new Date(i < 7 ? base + 5_000 : base + i * 1_000).toISOString();
    const id = `bld_${String.fromCharCode(122 - i)}${randomUUID().slice(0, 6)}`;
    records.push({ id, status: "queued", config, createdAt: at, updatedAt: at, timestamps: { queued: at }, attempts: 0 });
  }
  for (const record of records) expect(await store.create(record)).toBe(true);
  const expected = records.map(historyPositionOf).sort(compareHistoryPositions).map((p) => p.id);

  expect(await collect(store.newestFirst(undefined, 3))).toEqual(expected);
  expect(await collect(store.newestFirst())).toEqual(expected);
  // resuming after any position gives exactly the rest, also in the middle of the shared millisecond
  for (const cut of [0, 3, 9, 10, 15, 19]) {
    const after = historyPositionOf(records.find((r) => r.id === expected[cut])!);
    expect(await collect(store.newestFirst(after, 3))).toEqual(expected.slice(cut + 1));
  }
  // a record that expired while its index entry remains is skipped
  await redis.del(`${prefix}build:${expected[4]}`);
  expect(await collect(store.newestFirst(undefined, 3))).toEqual(expected.filter((_, i) => i !== 4));
});
