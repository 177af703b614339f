import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFetch, auditRedisKeys, cachedImages, containersWith, eventually, reportFigures, services, startStack, type RunningStack } from "@m1l0/e2e";
import { CHAOS_WORKER_ENV, FLEET_SOCKETS, requireFleet, seconds, chaosFile } from "../src/index.js";

// (f) 1,000 queued tiny builds (each unique) drained by 3 workers on 3 daemons: none lost,
// none run twice; afterwards no containers, no work dirs, a bounded image cache per daemon
// and no orphaned Redis keys.
const { run, workDir } = chaosFile();
const N = Number(process.env.CHAOS_DRAIN_BUILDS ?? 1_000);
const CONCURRENCY = Number(process.env.CHAOS_DRAIN_CONCURRENCY ?? 4);
const CACHE_MAX = 20;
// generous: on a quiet 2-CPU machine the fleet drains several builds a second; a loaded one far fewer
const DRAIN_LIMIT_MS = Math.max(420_000, N * 1_500);
const sources = workDir("drain-src");
const work = workDir("drain-work");

describe("chaos: 1,000 queued builds drained by a 3-daemon fleet", () => {
  let stack: RunningStack;
  const workerIds = [0, 1, 2].map((index) => `drain${index + 1}-${run}`);

  beforeAll(async () => {
    requireFleet();
    stack = await startStack({
      concurrency: CONCURRENCY,
      apiEnv: { ALLOW_DIR_SOURCES: "true" },
      workerEnv: {
        ...CHAOS_WORKER_ENV,
        ALLOW_DIR_SOURCES: "true",
        DIR_SOURCE_ROOTS: sources,
        WORK_DIR: work,
        IMAGE_CACHE_MAX_IMAGES: String(CACHE_MAX),
        WORKER_ID: workerIds[0],
        DOCKER_SOCKET: FLEET_SOCKETS[0],
      },
      extraWorkers: [
        { WORKER_ID: workerIds[1], DOCKER_SOCKET: FLEET_SOCKETS[1] },
        { WORKER_ID: workerIds[2], DOCKER_SOCKET: FLEET_SOCKETS[2] },
      ],
    });
  });
  afterAll(async () => stack?.stop());

  it(`${N} builds: every one succeeds exactly once, spread over the fleet; nothing left behind`, async () => {
    for (let index = 0; index < N; index++) {
      const dir = path.join(sources, `b${index}`);
      mkdirSync(dir);
      writeFileSync(path.join(dir, "Dockerfile"), `FROM ${services.baseImageBusybox}\nLABEL chaos.drain="${run}-${index}"\n`);
    }
    const connection = new Redis(services.redisUrl, { maxRetriesPerRequest: null });
    const queue = new Queue(stack.queueName, { connection });
    try {
      const started = Date.now();
      const ids: string[] = new Array(N);
      let next = 0;
      await Promise.all(
        Array.from({ length: 25 }, async () => {
          while (next < N) {
            const index = next++;
            const response = await apiFetch(`${stack.apiUrl}/builds`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ service: "dockerhub", repository: "m1l0/chaos-drain", revision: `${run}-${index}`, source: `dir://${path.join(sources, `b${index}`)}`, dockerfile: "Dockerfile" }),
            });
            const body = (await response.json()) as { id?: string };
            if (response.status !== 202 || !body.id) throw new Error(`submit ${index}: ${response.status} ${JSON.stringify(body)}`);
            ids[index] = body.id;
          }
        }),
      );
      const submittedMs = Date.now() - started;
      expect(new Set(ids).size).toBe(N);

      let counts: Record<string, number> = {};
      let lastProgress = Date.now();
      await eventually(
        async () => {
          counts = await queue.getJobCounts("completed", "failed", "waiting", "active", "delayed", "prioritized");
          if (Date.now() - lastProgress > 30_000) {
            lastProgress = Date.now();
            console.log(`drain: ${seconds(lastProgress - started)} s ${JSON.stringify(counts)}`);
          }
          return (counts.completed ?? 0) + (counts.failed ?? 0) >= N;
        },
        DRAIN_LIMIT_MS,
        500,
        `${N} jobs to finish`,
      );
      const drainedMs = Date.now() - started;
      expect(counts).toMatchObject({ completed: N, failed: 0, waiting: 0, active: 0, delayed: 0 });

      // every record: succeeded, one attempt; every event stream: one `fetching`, one final answer
      const records = (await connection.mget(ids.map((id) => `${stack.keyPrefix}build:${id}`))).map((raw) => JSON.parse(raw ?? "null") as { id: string; status: string; attempts: number; worker?: string } | null);
      const notSucceeded = records.filter((record) => record?.status !== "succeeded");
      expect(notSucceeded.slice(0, 5)).toEqual([]);
      const retried = records.filter((record) => record?.attempts !== 1);
      expect(retried.slice(0, 5)).toEqual([]);
      const pipeline = connection.pipeline();
      for (const id of ids) pipeline.xrange(`${stack.keyPrefix}build:${id}:events`, "-", "+");
      const streams = ((await pipeline.exec()) ?? []).map(([, entries]) => entries as Array<[string, string[]]>);
      let duplicates = 0;
      streams.forEach((entries) => {
        const statuses = entries.map(([, fields]) => JSON.parse(fields[1]!) as { type: string; status?: string }).filter((event) => event.type === "status");
        const fetching = statuses.filter((event) => event.status === "fetching").length;
        const finals = statuses.filter((event) => event.status === "succeeded" || event.status === "failed" || event.status === "cancelled").length;
        duplicates += Math.max(fetching - 1, 0) + Math.max(finals - 1, 0);
        expect(fetching).toBe(1);
        expect(finals).toBe(1);
      });
      // each build id in exactly one worker's "processing" log line
      const processing = new Map<string, Set<string>>();
      let processingLines = 0;
      for (const line of stack.logs) {
        if (!line.includes('"msg":"processing"')) continue;
        const id = /"buildId":"([^"]+)"/.exec(line)?.[1];
        if (!id) continue;
        processingLines++;
        const worker = line.slice(0, line.indexOf(":"));
        processing.set(id, (processing.get(id) ?? new Set()).add(worker));
      }
      expect(processingLines).toBe(N);
      expect(ids.every((id) => processing.get(id)?.size === 1)).toBe(true);
      const perWorker = workerIds.map((worker) => records.filter((record) => record?.worker === worker).length);
      expect(perWorker.filter((count) => count > 0).length).toBe(3);

      // nothing left behind: containers, work dirs, images beyond the cache bound, Redis keys
      for (const socket of FLEET_SOCKETS) expect(await containersWith(`chaos.drain=${run}`, socket)).toEqual([]);
      await eventually(() => readdirSync(work).length === 0, 30_000, 250, "the work dir to be empty");
      const images: number[] = [];
      for (const socket of FLEET_SOCKETS) {
        const count = await eventually(async () => {
          const cached = (await cachedImages(stack.queueName, socket)).length;
          return cached <= CACHE_MAX ? cached + 1 : false; // +1: 0 images is a valid answer
        }, 30_000, 500, `the image cache on ${socket} to shrink to ${CACHE_MAX}`);
        images.push(count - 1);
      }
      const audit = await auditRedisKeys(services.redisUrl, stack.keyPrefix, stack.queueName);
      expect(audit.orphans).toEqual([]);

      reportFigures(
        `chaos f (${N} builds, 3 workers × 3 daemons)`,
        `${N} submitted in ${seconds(submittedMs)} s, drained in ${seconds(drainedMs)} s (${(N / (drainedMs / 1000)).toFixed(1)} builds/s, concurrency ${CONCURRENCY} per worker); per worker ${perWorker.join("/")}; jobs lost ${N - (counts.completed ?? 0)}, duplicates ${duplicates}; images left per daemon ${images.join("/")} (cap ${CACHE_MAX}); Redis keys ${JSON.stringify(audit.counts)}, orphans ${audit.orphans.length}`,
      );
      reportFigures("chaos", `jobs lost ${N - (counts.completed ?? 0)}, duplicates ${duplicates}, drain ${seconds(drainedMs)} s for ${N} builds`);
    } finally {
      await queue.close();
      connection.disconnect();
    }
  }, DRAIN_LIMIT_MS + 180_000);
});
