import { loadCatalog } from "@m1l0/catalog";
import { buildConfigSchema, type BuildRecord } from "@m1l0/config";
import { BUILD_JOB_NAME, BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import type { RegistryResolver } from "@m1l0/registry";
import { Queue, QueueEvents, Worker, type Job } from "bullmq";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ImageBuildRequest } from "../src/builder.js";
import { NO_WEBHOOKS } from "@m1l0/webhooks";
import { FixedNetworkEgress } from "../src/egress/index.js";
import type { PipelineDeps } from "../src/pipeline.js";
import { createBuildProcessor } from "../src/worker.js";
import { FakeImageBuilder } from "./support/fake-builder.js";

const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const prefix = `test:${randomUUID()}:`;
const queueName = `test-progress-${randomUUID()}`;
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-progress-test-"));
const project = path.join(dir, "project");

let redis: Redis;
let workerRedis: Redis;
let store: BuildStore;
let queue: Queue<BuildJobData>;
let events: QueueEvents;
let worker: Worker<BuildJobData>;
/** the job's progress as the dashboard would have read it while the image was being built */
const seenWhileBuilding = new Map<string, unknown>();

/** The fake daemon behind our own port, noting the job's progress while it builds. */
class ProgressBuilder extends FakeImageBuilder {
  override async build(request: ImageBuildRequest) {
    const id = /progress-(\S+)$/.exec(request.tag)?.[1];
    if (id) seenWhileBuilding.set(id, (await queue.getJob(id))?.progress);
    return super.build(request);
  }
}
const builder = new ProgressBuilder({ anyBase: true });

const registry: RegistryResolver = {
  async resolve(config) {
    const tag = config.revision ?? "latest";
    return { registry: "registry.test", repository: config.repository, tag, reference: `registry.test/${config.repository}:${tag}`, auth: async () => undefined };
  },
};

function deps(): PipelineDeps {
  return {
    store,
    builder,
    imageLabels: {},
    registry: { dockerhub: registry, ecr: undefined },
    catalog: loadCatalog(),
    sourcePolicy: { allowHttp: false, allowDir: true, dirRoots: [dir] },
    gitCredentials: [],
    workDir: dir,
    workerId: "w-progress",
    egress: new FixedNetworkEgress("none"),
    notifier: NO_WEBHOOKS,
    skipUnchanged: false,
    logger: pino({ level: "silent" }),
  };
}

async function submit(entry: string): Promise<string> {
  const id = `bld_progress_${randomUUID().slice(0, 8)}`;
  // the revision becomes the tag, which the fake builder reads the build id back from
  const config = buildConfigSchema.parse({ service: "dockerhub", repository: "m1l0/progress", source: `dir://${project}`, entry, revision: `progress-${id}` });
  const now = new Date().toISOString();
  const record: BuildRecord = { id, status: "queued", config, createdAt: now, updatedAt: now, timestamps: { queued: now }, attempts: 0 };
  await store.create(record);
  await queue.add(BUILD_JOB_NAME, { buildId: id, config }, { jobId: id, attempts: 1 });
  return id;
}

async function settled(id: string): Promise<Job<BuildJobData>> {
  const job = (await queue.getJob(id))!;
  // a deadline on every wait: a job that never settles fails the test instead of hanging it
  await job.waitUntilFinished(events, 30_000).catch(() => undefined);
  return (await queue.getJob(id))!;
}

beforeAll(async () => {
  mkdirSync(project);
  writeFileSync(path.join(project, "main.py"), "print('hi')\n");
  redis = createRedis(REDIS_URL, "producer");
  workerRedis = createRedis(REDIS_URL, "worker");
  store = new BuildStore(redis, prefix);
  queue = new Queue<BuildJobData>(queueName, { connection: redis });
  events = new QueueEvents(queueName, { connection: createRedis(REDIS_URL, "worker") });
  await events.waitUntilReady();
  worker = new Worker<BuildJobData>(queueName, createBuildProcessor(deps()), { connection: workerRedis });
  worker.on("error", () => undefined);
});

afterAll(async () => {
  await worker?.close();
  await events?.close();
  await queue?.obliterate({ force: true });
  await queue?.close();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis?.disconnect();
  workerRedis?.disconnect();
  rmSync(dir, { recursive: true, force: true });
});

describe("a build's phase as its BullMQ job's progress (what the dashboard shows)", () => {
  it("reports each phase while the build runs, ends at 100% succeeded, and names the build's log in the job's logs", async () => {
    const id = await submit("main.py");
    const job = await settled(id);
    expect((await store.require(id)).status).toBe("succeeded");
    expect(seenWhileBuilding.get(id)).toEqual({ progress: 30, phase: "building", log: `/builds/${id}/logs`, worker: "w-progress" });
    expect(job.progress).toEqual({ progress: 100, phase: "succeeded", log: `/builds/${id}/logs`, worker: "w-progress" });
    const { logs } = await queue.getJobLogs(id);
    expect(logs[0]).toBe(`attempt 1 on w-progress; build log: /builds/${id}/logs (GET with an API token, ?follow=1 to stream)`);
    expect(logs.slice(1).map((line) => line.replace(/^\S+ /, ""))).toEqual(["fetching", "building", "pushing", "succeeded"]);
  });

  it("a failed build keeps the percentage of the phase it failed in, with phase `failed`", async () => {
    const id = await submit("missing.py");
    const job = await settled(id);
    expect((await store.require(id)).error?.code).toBe("ENTRY_NOT_FOUND");
    expect(job.failedReason).toMatch(/entry file "missing.py" was not found/);
    expect(job.progress).toEqual({ progress: 10, phase: "failed", log: `/builds/${id}/logs`, worker: "w-progress" });
    expect((await queue.getJobLogs(id)).logs.slice(1).map((line) => line.replace(/^\S+ /, ""))).toEqual(["fetching", "failed"]);
  });
});
