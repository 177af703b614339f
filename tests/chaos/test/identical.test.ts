import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFetch, reportFigures, services, sleeperRepo, startStack, statusEvents, waitForBuild, type RunningStack } from "@m1l0/e2e";
import { CHAOS_WORKER_ENV, seconds, chaosFile } from "../src/index.js";

// (e) 200 concurrent identical submissions attach to one build: one id, one job, one docker build.
const { run, cleanups } = chaosFile();
const N = 200;

describe("chaos: 200 concurrent identical submissions", () => {
  let stack: RunningStack;
  beforeAll(async () => {
    stack = await startStack({ concurrency: 2, workerEnv: { ...CHAOS_WORKER_ENV } });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it("all responses carry the same build id; exactly one BullMQ job; the worker ran one build", async () => {
    const repo = sleeperRepo(`chaos-identical-${run}`, 2);
    cleanups.push(repo.cleanup);
    const body = JSON.stringify({ service: "dockerhub", repository: "m1l0/chaos-identical", revision: run, source: repo.url, dockerfile: "Dockerfile" });
    const started = Date.now();
    const responses = await Promise.all(
      Array.from({ length: N }, async () => {
        const response = await apiFetch(`${stack.apiUrl}/builds`, { method: "POST", headers: { "content-type": "application/json" }, body });
        return { status: response.status, body: (await response.json()) as { id?: string } };
      }),
    );
    const submitMs = Date.now() - started;
    const statuses = new Set(responses.map((response) => response.status));
    expect([...statuses].every((status) => status === 200 || status === 202), JSON.stringify([...statuses])).toBe(true);
    const ids = new Set(responses.map((response) => response.body.id));
    expect(ids.size, JSON.stringify([...ids].slice(0, 5))).toBe(1);
    const id = [...ids][0]!;
    const record = await waitForBuild(stack.apiUrl, id, 120_000);
    expect(["succeeded", "cached"]).toContain(record.status);

    const connection = new Redis(services.redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue(stack.queueName, { connection });
    try {
      const counts = await queue.getJobCounts("completed", "failed", "waiting", "active", "delayed", "prioritized");
      const jobs = Object.values(counts).reduce((sum, count) => sum + count, 0);
      expect(jobs, JSON.stringify(counts)).toBe(1);
    } finally {
      await queue.close();
      connection.disconnect();
    }
    const processing = stack.logs.filter((line) => line.includes('"msg":"processing"') && line.includes(id));
    expect(processing).toHaveLength(1);
    expect((await statusEvents(stack.apiUrl, id)).filter((status) => status === "fetching")).toHaveLength(1);
    reportFigures("chaos e (200 identical submissions)", `${N} POSTs in ${seconds(submitMs)} s → ${ids.size} build id, 1 BullMQ job, ${processing.length} build run; status ${record.status}`);
  });
});
