import { loadCatalog } from "@m1l0/catalog";
import { createApiToken } from "@m1l0/config";
import { BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import { Authenticator, BuildService, buildApp, type AppDeps, type SubmitPolicy } from "../src/index.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

/** One test file's API: the app on the real Redis, with a queue and a record namespace of its own. */
export interface TestApi {
  app: FastifyInstance;
  redis: Redis;
  queue: Queue<BuildJobData>;
  store: BuildStore;
  builds: BuildService;
  queueName: string;
  /** Redis namespace of this file's records (and whatever else it puts there, e.g. sessions) */
  prefix: string;
  /** empties the queue and the namespace (between cases that count what was enqueued) */
  reset(): Promise<void>;
  /** closes the app and removes everything the file left in Redis */
  close(): Promise<void>;
}

export interface TestApiOptions {
  /** names the queue, for reading Redis by hand */
  name: string;
  /** what the API accepts as sources [no http, no dir] */
  sources?: SubmitPolicy;
  /** the rest of buildApp's dependencies, given this file's connections [auth disabled] */
  app?: (parts: { redis: Redis; queue: Queue<BuildJobData>; store: BuildStore; builds: BuildService; prefix: string }) => Partial<AppDeps>;
}

/**
 * Builds the app for an API test (fastify/demo's `build(t)`): call it in beforeAll and
 * `close()` it in afterAll; requests go through `app.inject`.
 */
export async function buildTestApi(options: TestApiOptions): Promise<TestApi> {
  const queueName = `test-${options.name}-${randomUUID()}`;
  const prefix = `test:${randomUUID()}:`;
  const redis = createRedis(REDIS_URL, "producer");
  const queue = new Queue<BuildJobData>(queueName, { connection: redis });
  const store = new BuildStore(redis, prefix);
  const builds = new BuildService(store, queue, loadCatalog(), options.sources ?? { allowHttp: false, allowDir: false });
  const app = await buildApp({ auth: Authenticator.disabled(), builds, store, redis, ...options.app?.({ redis, queue, store, builds, prefix }) });
  const forget = async () => {
    await queue.obliterate({ force: true });
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
  };
  return {
    app,
    redis,
    queue,
    store,
    builds,
    queueName,
    prefix,
    reset: forget,
    async close() {
      await app.close();
      await forget();
      await queue.close();
      redis.disconnect();
    },
  };
}

/** A log destination that keeps every line the app's logger writes (to check what logs never show). */
export function logCapture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { lines, stream };
}

/** The four tokens the auth tests use: an admin and three users, with their file lines. */
export function authTokens() {
  const admin = createApiToken("ops", "admin");
  const alice = createApiToken("alice", "user");
  const bob = createApiToken("bob", "user");
  const carol = createApiToken("carol", "user");
  const all = [admin, alice, bob, carol];
  return { admin, alice, bob, carol, all, lines: all.map((t) => t.line).join("\n") };
}

export const bearer = (t: { token: string }) => ({ authorization: `Bearer ${t.token}` });

/** Every key under `prefix` and its value (strings, streams, sorted sets), as text to search for secrets. */
export async function redisText(redis: Redis, prefix: string): Promise<string[]> {
  const keys = await redis.keys(`${prefix}*`);
  const texts: string[] = [];
  for (const key of keys) {
    const type = await redis.type(key);
    const value = type === "string" ? await redis.get(key) : type === "stream" ? JSON.stringify(await redis.xrange(key, "-", "+")) : type === "zset" ? JSON.stringify(await redis.zrange(key, "0", "-1")) : "";
    texts.push(`${key} ${value}`);
  }
  return texts;
}
