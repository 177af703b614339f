import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  auditRedisKeys,
  containersWith,
  eventually,
  getBuild,
  isTerminal,
  reportFigures,
  services,
  sleeperRepo,
  startStack,
  submit,
  terminalEvents,
  waitForBuild,
  waitUntil,
  workEntriesOf,
  type RunningStack,
  apiFetch,
} from "@m1l0/e2e";
import { startHungServer, type HungServer } from "@m1l0/testkit";
import { CHAOS_WORKER_ENV, seconds, chaosFile } from "../src/index.js";

// (g) Cancel in each phase — queued, fetching, building, pushing — is `cancelled` within 5 s and
// leaves nothing: no container, no work dir, the job removed (queued) or failed (running).
// A hung git server and a hung registry (TCP servers that never answer) hold builds in
// `fetching` and `pushing`. lifecycle.e2e covers cancel's API details (409, 404, no retry).
const { run, cleanups, workDir } = chaosFile();
const work = workDir("cancel");

describe("chaos: cancel during each phase", () => {
  let stack: RunningStack;
  let hungGit: HungServer;
  let hungRegistry: HungServer;
  let connection: Redis;
  let queue: Queue;
  const figures: string[] = [];

  beforeAll(async () => {
    hungGit = await startHungServer();
    hungRegistry = await startHungServer();
    stack = await startStack({ concurrency: 1, workerEnv: { ...CHAOS_WORKER_ENV, WORK_DIR: work, DOCKERHUB_REGISTRY: `127.0.0.1:${hungRegistry.port}` } });
    connection = new Redis(services.redisUrl, { maxRetriesPerRequest: null });
    queue = new Queue(stack.queueName, { connection });
  });
  afterAll(async () => {
    await queue?.close();
    connection?.disconnect();
    await stack?.stop();
    await hungGit?.close();
    await hungRegistry?.close();
  });

  function sleeper(marker: string, secondsToSleep: number) {
    const repo = sleeperRepo(marker, secondsToSleep);
    cleanups.push(repo.cleanup);
    return { service: "dockerhub", repository: "m1l0/chaos-cancel", revision: `${run}-${marker}`, source: repo.url, dockerfile: "Dockerfile" };
  }

  /** DELETE, then the record must be `cancelled` within 5 s; returns how long it took. */
  async function cancel(id: string): Promise<number> {
    const started = Date.now();
    expect((await apiFetch(`${stack.apiUrl}/builds/${id}`, { method: "DELETE" })).status).toBe(202);
    const record = await waitUntil(stack.apiUrl, id, isTerminal, 5_000, 25);
    const took = Date.now() - started;
    expect(record.status).toBe("cancelled");
    expect(took).toBeLessThan(5_000);
    return took;
  }

  async function expectLeftNothing(id: string, marker: string, job: "removed" | "failed") {
    await eventually(async () => (await containersWith(marker)).length === 0, 5_000, 100, `no container of ${marker}`);
    await eventually(() => workEntriesOf(work, id).length === 0, 5_000, 100, `no work dir of ${id}`);
    if (job === "removed") expect(await queue.getJob(id)).toBeUndefined();
    else await eventually(async () => (await (await queue.getJob(id))?.getState()) === "failed", 5_000, 100, `job ${id} failed`);
    expect(await terminalEvents(stack.apiUrl, id)).toEqual(["cancelled"]);
  }

  it("building, and queued behind it", async () => {
    const building = `chaos-cancel-building-${run}`;
    const blocker = await submit(stack.apiUrl, sleeper(building, 60));
    await waitUntil(stack.apiUrl, blocker, (record) => record.status === "building", 60_000);
    await eventually(async () => (await containersWith(building)).length > 0, 30_000, 100, "the RUN step's container");

    const queuedMarker = `chaos-cancel-queued-${run}`;
    const queued = await submit(stack.apiUrl, sleeper(queuedMarker, 1));
    expect((await getBuild(stack.apiUrl, queued)).status).toBe("queued");
    const queuedMs = await cancel(queued);
    await expectLeftNothing(queued, queuedMarker, "removed");
    expect((await getBuild(stack.apiUrl, queued)).timestamps.fetching).toBeUndefined();

    const buildingMs = await cancel(blocker);
    await expectLeftNothing(blocker, building, "failed");
    figures.push(`queued ${seconds(queuedMs)} s`, `building ${seconds(buildingMs)} s`);
  });

  it("fetching (a git server that never answers)", async () => {
    const marker = `chaos-cancel-fetching-${run}`;
    const id = await submit(stack.apiUrl, { ...sleeper(marker, 1), source: `http://127.0.0.1:${hungGit.port}/hung/repo.git` });
    await waitUntil(stack.apiUrl, id, (record) => record.status === "fetching", 30_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await getBuild(stack.apiUrl, id)).status).toBe("fetching");
    const took = await cancel(id);
    await expectLeftNothing(id, marker, "failed");
    figures.push(`fetching ${seconds(took)} s`);
  });

  it("pushing (a registry that never answers)", async () => {
    const marker = `chaos-cancel-pushing-${run}`;
    const id = await submit(stack.apiUrl, sleeper(marker, 0));
    await waitUntil(stack.apiUrl, id, (record) => record.status === "pushing", 120_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await getBuild(stack.apiUrl, id)).status).toBe("pushing");
    const took = await cancel(id);
    await expectLeftNothing(id, marker, "failed");
    figures.push(`pushing ${seconds(took)} s`);
  });

  it("after cancels and a failure, every Redis key of the stack is accounted for", async () => {
    const failed = await submit(stack.apiUrl, { ...sleeper(`chaos-cancel-fail-${run}`, 0), dockerfile: "missing/Dockerfile" });
    expect((await waitForBuild(stack.apiUrl, failed, 60_000)).status).toBe("failed");
    const audit = await auditRedisKeys(services.redisUrl, stack.keyPrefix, stack.queueName);
    expect(audit.orphans).toEqual([]);
    expect(audit.counts.record).toBe(5);
    reportFigures("chaos g (cancel per phase)", `cancelled within: ${figures.join(", ")}; nothing left (containers 0, work dirs 0); Redis keys ${JSON.stringify(audit.counts)}, orphans 0`);
  });
});
