import { newBuildId, parseBuildConfig, type BuildRecord } from "@m1l0/config";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { afterAll } from "vitest";
import { BuildStore, createRedis } from "../src/index.js";

export const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
export const config = parseBuildConfig({ service: "dockerhub", repository: "me/app", source: "https://example.com/app.git" });

export interface StoreFixture {
  redis: Redis;
  store: BuildStore;
  /** every key this file writes starts with it; removed after the file's tests */
  prefix: string;
}

/** A store on the real Redis under a prefix of its own, cleaned up after the file's tests. */
export function useStore(): StoreFixture {
  const prefix = `test:${randomUUID()}:`;
  const redis = createRedis(REDIS_URL, "worker");
  const store = new BuildStore(redis, prefix);
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  });
  return { redis, store, prefix };
}

/** A queued record for `config`, with a fresh id. */
export function newRecord(extra: Partial<BuildRecord> = {}): BuildRecord {
  const now = new Date().toISOString();
  return { id: newBuildId(), status: "queued", config, createdAt: now, updatedAt: now, timestamps: { queued: now }, attempts: 0, ...extra };
}
