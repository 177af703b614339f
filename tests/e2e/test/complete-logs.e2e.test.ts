import { GetObjectCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { LOG_LINE_MAX_BYTES_DEFAULT, LOG_TAIL_EVENTS_DEFAULT, logTailBoundBytes } from "@m1l0/queue";
import { Redis } from "ioredis";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGitFixture, eventually, getBuild, getLog, reportFigures, services, startPrivateS3, startStack, submit, waitForBuild, type PrivateService, type RunningStack, scanKeys } from "../src/index.js";

/**
 * Complete logs whatever their length, and uploads that outlive their worker, on the real
 * stack: a private s3rver (the outage test stops it; the shared one is never touched), the
 * shared Redis, the host's daemon and registry.
 */
const LINES = 100_000;
/** ~100 bytes a line: ~10 MB of RUN output */
const PAD = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2).slice(0, 80);
const cleanups: Array<() => void> = [];
let s3: PrivateService & { endpoint: string; bucket: string; env: NodeJS.ProcessEnv };
let client: S3Client;
let stack: RunningStack;
let redis: Redis;

function repoWith(dockerfile: string): string {
  const empty = mkdtempSync(path.join(tmpdir(), "m1l0-empty-"));
  try {
    const repo = createGitFixture(empty, { Dockerfile: dockerfile });
    cleanups.push(repo.cleanup);
    return repo.url;
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
}

const config = (source: string, tag: string) => ({ service: "dockerhub", repository: "m1l0/e2e-complete-logs", revision: tag, source, dockerfile: "Dockerfile" });

async function s3Text(key: string): Promise<string> {
  const response = await client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
  return response.Body!.transformToString("utf8");
}

/** Bytes Redis holds for one build: every key naming it (record, event stream, upload state and lease, its BullMQ job and job log). */
async function redisBytesOf(id: string): Promise<{ bytes: number; keys: string[] }> {
  const keys: string[] = [];
  for (const pattern of [`${stack.keyPrefix}*${id}*`, `bull:${stack.queueName}:${id}*`]) {
    keys.push(...(await scanKeys(redis, pattern)));
  }
  let bytes = 0;
  for (const key of keys) bytes += Number((await redis.call("MEMORY", "USAGE", key, "SAMPLES", "0")) ?? 0);
  return { bytes, keys };
}

async function artifactsOf(id: string) {
  return ((await getBuild(stack.apiUrl, id)) as unknown as { artifacts?: Record<string, string>; contextDigest?: string });
}

beforeAll(async () => {
  s3 = await startPrivateS3();
  client = new S3Client({ endpoint: s3.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
  redis = new Redis(services.redisUrl);
  // a short lease and sweep, so the takeover test does not wait out production's 30 s
  stack = await startStack({ label: "e2e-logs", workerEnv: { ...s3.env, ARTIFACT_LEASE_MS: "3000", ARTIFACT_SWEEP_INTERVAL_MS: "500" }, apiEnv: s3.env, worker: { WORKER_ID: "logs-worker-a" } });
});

afterAll(async () => {
  await stack?.stop();
  await s3?.destroy();
  client?.destroy();
  redis?.disconnect();
  for (const cleanup of cleanups) cleanup();
});

describe("complete logs and uploads that outlive their worker", () => {
  it(`a RUN step printing ${LINES.toLocaleString("en")} lines: the S3 log holds every line, whole and in order; Redis stays under its bound`, async () => {
    // a unique step, so the daemon's layer cache never answers for it
    const source = repoWith(`FROM ${services.baseImageBusybox}\nRUN echo run-${Date.now()} && seq 1 ${LINES} | awk '{ printf "line-%06d ${PAD}\\n", $1 }'\n`);
    const id = await submit(stack.apiUrl, config(source, `long-${Date.now().toString(36)}`));
    // Redis for this build, sampled while it runs: its peak is what the bound is about
    let peak = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, (await redisBytesOf(id)).bytes);
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })();
    const done = await waitForBuild(stack.apiUrl, id, 600_000).finally(() => (sampling = false));
    await sampler;
    expect(done.status, stack.recentLogs()).toBe("succeeded");
    await eventually(async () => (await artifactsOf(id)).artifacts?.log === "uploaded", 300_000, 250, "log uploaded");
    const after = await redisBytesOf(id);
    peak = Math.max(peak, after.bytes);

    const log = await s3Text(`logs/${id}.log`);
    const numbers: number[] = [];
    const broken: string[] = [];
    const wholeLine = new RegExp(`^line-(\\d{6}) ${PAD}$`);
    for (const line of log.split("\n")) {
      const body = / \[build\] (.*)$/.exec(line)?.[1];
      if (body === undefined || body.startsWith("Step ")) continue;
      const whole = wholeLine.exec(body);
      if (whole) numbers.push(Number(whole[1]));
      // a piece of one: a line the daemon's chunks cut in two and nobody joined
      else if (body.length > 1 && `line-000000 ${PAD}`.includes(body.replace(/\d/g, "0"))) broken.push(body);
    }
    expect(broken).toEqual([]);
    expect(numbers.length).toBe(LINES);
    expect(numbers.every((n, i) => n === i + 1)).toBe(true);
    // every phase, from the first status on
    expect(log).toMatch(/^\S+ \[status\] queued\n/);
    expect(log).toMatch(/\[fetch\] fetching /);
    expect(log.trimEnd().split("\n").at(-1)).toMatch(/\[status\] succeeded/);
    // the API serves the complete log (from S3 now: Redis holds only the tail)
    expect(await getLog(stack.apiUrl, id)).toBe(log);
    const liveTail = Number(await redis.xlen(`${stack.keyPrefix}build:${id}:events`));
    expect(liveTail).toBeLessThanOrEqual(LOG_TAIL_EVENTS_DEFAULT + 100);
    const bound = logTailBoundBytes(LOG_TAIL_EVENTS_DEFAULT, LOG_LINE_MAX_BYTES_DEFAULT);
    expect(peak).toBeLessThan(bound);
    reportFigures("complete-logs", `${LINES} printed lines → S3 log ${log.split("\n").length - 1} lines (${numbers.length} numbered, in order, ${broken.length} broken), ${(Buffer.byteLength(log) / 1e6).toFixed(1)} MB; Redis for the build: peak ${(peak / 1024).toFixed(0)} KiB while running, ${(after.bytes / 1024).toFixed(0)} KiB after (${after.keys.length} keys, stream ${liveTail} events); bound ${(bound / 1024 / 1024).toFixed(1)} MiB`);
  }, 900_000);

  it("S3 down, the build finishes, its worker is SIGKILLed, S3 returns: another worker uploads the log, record and context", async () => {
    const source = repoWith(`FROM ${services.baseImageBusybox}\nRUN echo run-${Date.now()} && seq 1 3000 | sed s/^/outage-line-/ && sleep 2\n`);
    const id = await submit(stack.apiUrl, config(source, `outage-${Date.now().toString(36)}`));
    await eventually(async () => ["building"].includes((await getBuild(stack.apiUrl, id)).status), 300_000, 50, "build running");
    await s3.stop();
    const done = await waitForBuild(stack.apiUrl, id, 600_000);
    expect(done.status, stack.recentLogs()).toBe("succeeded");
    await eventually(async () => (await artifactsOf(id)).artifacts?.log === "pending", 60_000, 50, "uploads pending");
    // the second worker is up before the first dies (a fleet): it must not upload while the owner's lease lives
    const other = stack.startWorker({ WORKER_ID: "logs-worker-b" });
    await eventually(() => stack.logs.some((line) => line.startsWith("worker2: ") && line.includes("worker ready")), 120_000, 100, "second worker up");
    const owner = stack.workers[0]!;
    const exited = new Promise((resolve) => owner.once("exit", resolve));
    owner.kill("SIGKILL");
    await exited;
    expect((await artifactsOf(id)).artifacts).toMatchObject({ log: "pending", record: "pending" });
    await s3.start();
    const back = Date.now();
    const uploaded = await eventually(
      async () => {
        const record = await artifactsOf(id);
        const { log, record: archived, context } = record.artifacts ?? {};
        return log === "uploaded" && archived === "uploaded" && context === "uploaded" ? record : undefined;
      },
      300_000,
      100,
      "uploads finished by the other worker",
    );
    const recoveryMs = Date.now() - back;
    const log = await s3Text(`logs/${id}.log`);
    const numbers = [...log.matchAll(/\[build\] outage-line-(\d+)\n/g)].map((match) => Number(match[1]));
    expect(numbers).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1));
    expect(log.trimEnd().split("\n").at(-1)).toMatch(/\[status\] succeeded/);
    const archivedRecord = JSON.parse(await s3Text(`records/${id}.json`)) as { status: string; artifacts: Record<string, string> };
    expect(archivedRecord).toMatchObject({ status: "succeeded", artifacts: { record: "uploaded", log: "uploaded" } });
    const contextKey = `contexts/${uploaded.contextDigest!.replace("sha256:", "")}.tar.gz`;
    expect((await client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: contextKey }))).ContentLength).toBeGreaterThan(0);
    expect(stack.logs.some((line) => line.startsWith("worker2: ") && line.includes(id) && line.includes("uploader is gone")), stack.recentLogs(60)).toBe(true);
    expect(other.exitCode).toBeNull();
    reportFigures("complete-logs", `crash upload: S3 back → log, record and context uploaded by the other worker in ${(recoveryMs / 1000).toFixed(1)} s (lease 3 s, sweep 0.5 s)`);
  }, 900_000);
});
