import type { BuildRecord } from "@m1l0/config";
import { Queue, Worker } from "bullmq";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BUILD_JOB_NAME, cancelBuild, cancelChannel, createRedis, isRedisUnavailableError, type BuildJobData } from "../src/index.js";
import { config, newRecord, REDIS_URL, useStore } from "./helper.js";

const { redis, store } = useStore();
const queueName = `test-cancel-${randomUUID()}`;

let queue: Queue<BuildJobData>;

async function newQueuedBuild(): Promise<BuildRecord> {
  const record = newRecord();
  await store.create(record);
  await queue.add(BUILD_JOB_NAME, { buildId: record.id, config }, { jobId: record.id });
  return record;
}

beforeAll(() => {
  queue = new Queue<BuildJobData>(queueName, { connection: createRedis(REDIS_URL, "producer") });
});

afterAll(async () => {
  await queue.obliterate({ force: true });
  await queue.close();
});

describe("cancelBuild (real Redis + BullMQ)", () => {
  it("removes a waiting job and marks the build cancelled", async () => {
    const record = await newQueuedBuild();
    const { record: after, outcome } = await cancelBuild(store, queue, record.id);
    expect(outcome).toBe("cancelled");
    expect(after.status).toBe("cancelled");
    expect(after.cancelRequestedAt).toBeTruthy();
    expect(await queue.getJob(record.id)).toBeUndefined();
  });

  it("signals the worker holding a running job over pub/sub instead of removing it", async () => {
    const record = await newQueuedBuild();
    const subscriber = redis.duplicate();
    const heard = new Promise<string>((resolve) => subscriber.on("message", (_channel, id: string) => resolve(id)));
    await subscriber.subscribe(cancelChannel(queueName));
    let release!: () => void;
    const started = new Promise<void>((resolveStarted) => {
      const worker = new Worker<BuildJobData>(
        queueName,
        () => {
          resolveStarted();
          return new Promise<void>((resolve) => (release = resolve));
        },
        { connection: createRedis(REDIS_URL, "worker") },
      );
      worker.on("error", () => undefined);
      afterAll(() => worker.close());
    });
    await started;
    const { record: after, outcome } = await cancelBuild(store, queue, record.id);
    expect(outcome).toBe("signalled");
    expect(after.status).toBe("queued"); // the worker decides when it has really stopped
    expect(after.cancelRequestedAt).toBeTruthy();
    expect(await heard).toBe(record.id);
    expect(await (await queue.getJob(record.id))?.getState()).toBe("active");
    release();
    subscriber.disconnect();
  });

  it("refuses to cancel a finished build with CONFLICT and never overwrites a terminal status", async () => {
    const record = await newQueuedBuild();
    await store.transition(record.id, "succeeded");
    await expect(cancelBuild(store, queue, record.id)).rejects.toMatchObject({ code: "CONFLICT" });
    expect(await store.transitionIfActive(record.id, "cancelled")).toBeUndefined();
    expect((await store.require(record.id)).status).toBe("succeeded");
    // the refused update must not leave the shared connection inside a WATCH
    await store.update(record.id, (current) => ({ ...current, attempts: 7 }));
    expect((await store.require(record.id)).attempts).toBe(7);
  });

  it("keeps every failed attempt's error on the record", async () => {
    const record = await newQueuedBuild();
    await store.recordAttemptError(record.id, { attempt: 1, code: "SOURCE_FETCH_FAILED", message: "connection refused", at: new Date().toISOString() });
    await store.recordAttemptError(record.id, { attempt: 2, code: "PUSH_FAILED", message: "registry 503", at: new Date().toISOString() });
    const after = await store.require(record.id);
    expect(after.attemptErrors?.map((entry) => [entry.attempt, entry.code])).toEqual([
      [1, "SOURCE_FETCH_FAILED"],
      [2, "PUSH_FAILED"],
    ]);
  });
});

describe("isRedisUnavailableError (real ioredis against a closed port)", () => {
  it("recognises what a producer connection throws while Redis is down, and nothing else", async () => {
    const { createServer } = await import("node:net");
    const port = await new Promise<number>((resolve) => {
      const server = createServer();
      server.listen(0, "127.0.0.1", () => {
        const address = server.address();
        server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
      });
    });
    const down = createRedis(`redis://127.0.0.1:${port}`, "producer");
    down.on("error", () => undefined);
    const error = await down.get("anything").catch((caught: unknown) => caught);
    down.disconnect();
    expect(isRedisUnavailableError(error)).toBe(true);
    expect(isRedisUnavailableError(new Error("WRONGTYPE Operation against a key holding the wrong kind of value"))).toBe(false);
    expect(isRedisUnavailableError("Connection is closed")).toBe(false);
  });
});
