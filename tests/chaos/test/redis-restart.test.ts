import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { reportFigures, sleeperRepo, startPrivateRedis, startStack, submit, terminalEvents, waitForBuild, waitUntil, type PrivateService, type RunningStack } from "@m1l0/e2e";
import { CHAOS_WORKER_ENV, seconds, chaosFile } from "../src/index.js";

// (b) Redis (a private one, AOF on) restarted while N builds are queued: all finish, none lost.
const { run, cleanups } = chaosFile();
const N = 10;

describe("chaos: Redis restarted mid-queue", () => {
  let redis: PrivateService;
  let stack: RunningStack;
  beforeAll(async () => {
    redis = await startPrivateRedis();
    stack = await startStack({ concurrency: 2, redisUrl: redis.address, workerEnv: { ...CHAOS_WORKER_ENV } });
  });
  afterAll(async () => {
    await stack?.stop();
    await redis?.destroy();
  });

  it(`${N} queued builds all finish after the restart; none lost, none answered twice`, async () => {
    const ids: string[] = [];
    for (let index = 0; index < N; index++) {
      const repo = sleeperRepo(`chaos-redis-${index}-${run}`, 2);
      cleanups.push(repo.cleanup);
      ids.push(await submit(stack.apiUrl, { service: "dockerhub", repository: "m1l0/chaos-redis", revision: `${run}-${index}`, source: repo.url, dockerfile: "Dockerfile" }));
    }
    await waitUntil(stack.apiUrl, ids[0]!, (record) => record.status === "building", 60_000);
    const started = Date.now();
    await redis.stop();
    const downAt = Date.now();
    expect((await fetch(`${stack.apiUrl}/readyz`)).status).toBe(503);
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    await redis.start();
    const downMs = Date.now() - downAt;

    const records = await Promise.all(ids.map((id) => waitForBuild(stack.apiUrl, id, 240_000)));
    const drainedMs = Date.now() - started;
    const lost = records.filter((record) => record.status !== "succeeded");
    expect(lost.map((record) => `${record.id}: ${record.status} ${JSON.stringify(record.error)}`)).toEqual([]);
    let duplicates = 0;
    for (const id of ids) duplicates += (await terminalEvents(stack.apiUrl, id)).length - 1;
    expect(duplicates).toBe(0);

    const connection = new Redis(redis.address, { maxRetriesPerRequest: null });
    const queue = new Queue(stack.queueName, { connection });
    try {
      const counts = await queue.getJobCounts("completed", "failed", "waiting", "active", "delayed");
      expect(counts).toMatchObject({ completed: N, failed: 0, waiting: 0, active: 0, delayed: 0 });
    } finally {
      await queue.close();
      connection.disconnect();
    }
    reportFigures("chaos b (Redis restart)", `${N} builds queued, Redis down ${seconds(downMs)} s; all ${N} succeeded ${seconds(drainedMs)} s after the stop; jobs lost 0, duplicates ${duplicates}`);
  });
});
