import { GetObjectCommand, HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import type { BuildRecord } from "@m1l0/config";
import { recordIndexKeys } from "@m1l0/storage";
import Docker from "dockerode";
import { Redis } from "ioredis";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import path from "node:path";
import { Readable } from "node:stream";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFetch, registerApiToken, ROOT_DIR, createGitFixture, freePort, getLog, services, startPrivateS3, startStack, submit, waitForBuild, type RunningStack, type StackTokens } from "../src/index.js";

/**
 * Archiving against a private s3rver (so the S3-outage test can stop it without touching the
 * shared one), one worker, and two extra API processes on the same Redis and queue.
 */
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const bucket = "m1l0-builds";
const run = `${Date.now().toString(36)}-${randomUUID().slice(0, 6)}`;
const MARKERS = 200;

let privateS3: Awaited<ReturnType<typeof startPrivateS3>>;
let s3: S3Client;
let stack: RunningStack;
let apiA: SpawnedApi;
let apiB: SpawnedApi;
let workerMetricsUrl: string;
let redis: Redis;
let metricsBefore: Map<string, number>;
const cleanups: Array<() => void> = [];

interface SpawnedApi {
  url: string;
  logs: string[];
  stop(): Promise<void>;
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
  });
}

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 120_000, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

const s3Env = (): NodeJS.ProcessEnv => privateS3.env;

/** One more API process on the stack's Redis and queue, reading artifacts from our s3rver. */
async function startApi(queueName: string, keyPrefix: string, tokens: StackTokens): Promise<SpawnedApi> {
  const port = await freePort();
  const logs: string[] = [];
  const child = spawn(process.execPath, [path.join(ROOT_DIR, "apps/api/dist/server.js")], {
    env: { PATH: process.env.PATH, REDIS_URL: services.redisUrl, BUILD_QUEUE_NAME: queueName, REDIS_KEY_PREFIX: keyPrefix, HOST: "127.0.0.1", PORT: String(port), GRPC_PORT: "0", API_TOKENS: tokens.apiTokensEnv, ALLOW_HTTP_SOURCES: "true", SOURCE_HOST_ALLOWLIST: "127.0.0.0/8,::1", LOG_LEVEL: "warn", ...s3Env() },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.on("data", (chunk: Buffer) => logs.push(chunk.toString()));
  child.stderr?.on("data", (chunk: Buffer) => logs.push(chunk.toString()));
  const url = `http://127.0.0.1:${port}`;
  registerApiToken(url, tokens.admin);
  await waitUntil("API", async () => (await fetch(`${url}/readyz`)).ok || (child.exitCode !== null ? Promise.reject(new Error(logs.join(""))) : false), 30_000, 100);
  return { url, logs, stop: () => stopChild(child) };
}

async function s3Text(key: string): Promise<string> {
  const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return response.Body!.transformToString("utf8");
}

async function s3Bytes(key: string): Promise<Buffer> {
  const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await response.Body!.transformToByteArray());
}

interface RecordView {
  id: string;
  status: string;
  buildKey?: string;
  contextDigest?: string;
  artifacts?: { log?: string; context?: string; record?: string };
  image?: { reference: string; digest?: string };
  error?: unknown;
}

async function record(apiUrl: string, id: string): Promise<RecordView> {
  return (await (await apiFetch(`${apiUrl}/builds/${id}`)).json()) as RecordView;
}

function archivedEverything(apiUrl: string, id: string, timeoutMs = 120_000): Promise<RecordView> {
  return waitUntil(
    `artifacts of ${id}`,
    async () => {
      const current = await record(apiUrl, id);
      const { log, context, record: archived } = current.artifacts ?? {};
      return log === "uploaded" && context === "uploaded" && archived === "uploaded" ? current : undefined;
    },
    timeoutMs,
  );
}

interface SseEvent {
  id: string;
  type: string;
  data: string;
}

/** Reads SSE from `url` until the `end` event, or until `stopAfter` events (then disconnects). */
async function readSse(url: string, options: { lastEventId?: string; stopAfter?: number } = {}): Promise<{ events: SseEvent[]; ended: boolean }> {
  const controller = new AbortController();
  const response = await apiFetch(url, { headers: { accept: "text/event-stream", ...(options.lastEventId ? { "last-event-id": options.lastEventId } : {}) }, signal: controller.signal });
  const events: SseEvent[] = [];
  let buffer = "";
  const decoder = new TextDecoder();
  try {
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffer += decoder.decode(chunk, { stream: true });
      let boundary: number;
      while ((boundary = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        const field = (name: string) => block.split("\n").find((line) => line.startsWith(`${name}: `))?.slice(name.length + 2) ?? "";
        const event = { id: field("id"), type: field("event"), data: field("data") };
        if (event.type === "end") return { events, ended: true };
        events.push(event);
        if (options.stopAfter !== undefined && events.length >= options.stopAfter) {
          controller.abort();
          return { events, ended: false };
        }
      }
    }
  } catch (error) {
    if (!controller.signal.aborted) throw error;
  }
  return { events, ended: false };
}

/** The log line the API's text log shows for an SSE event (same formatter). */
function sseLine(event: SseEvent): string {
  const parsed = JSON.parse(event.data) as { type: string; at: string; phase?: string; line?: string; status?: string };
  return parsed.type === "log" ? `${parsed.at} [${parsed.phase}] ${parsed.line}` : `${parsed.at} [status] ${parsed.status}`;
}

function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a Prometheus sample: ${line}`);
    // drop the worker label so assertions do not depend on the worker id
    const labels = (match[2] ?? "").replace(/,?worker="[^"]*"/, "").replace("{,", "{");
    samples.set(`${match[1]}${labels === "{}" ? "" : labels}`, Number(match[3]));
  }
  return samples;
}

async function scrape(url: string): Promise<Map<string, number>> {
  const response = await apiFetch(url);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toContain("text/plain");
  return parseMetrics(await response.text());
}

function dockerfile(extra: string): string {
  return [
    `FROM ${services.baseImageBusybox}`,
    "WORKDIR /app",
    "COPY . /app",
    `RUN for i in $(seq 1 ${MARKERS}); do echo "marker-line-$i"; done`,
    extra,
    'ENV M1L0_E2E="artifacts"',
    'CMD ["sh", "-c", "cat /app/run.txt"]',
    "",
  ].join("\n");
}

function fixture(name: string, extra = ""): string {
  const repo = createGitFixture(path.join(ROOT_DIR, "examples/mnist"), { Dockerfile: dockerfile(extra), "run.txt": `${name} ${run}\n` });
  cleanups.push(repo.cleanup);
  return repo.url;
}

const buildConfig = (source: string, tag: string) => ({ service: "dockerhub", repository: "m1l0/artifacts-e2e", source, revision: tag, dockerfile: "Dockerfile", ignores: ["data", "*.md"] });

beforeAll(async () => {
  privateS3 = await startPrivateS3(bucket);
  s3 = new S3Client({ endpoint: privateS3.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
  const metricsPort = await freePort();
  workerMetricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  stack = await startStack({ workerEnv: { ...s3Env(), METRICS_PORT: String(metricsPort) } });
  [apiA, apiB] = await Promise.all([startApi(stack.queueName, stack.keyPrefix, stack.tokens), startApi(stack.queueName, stack.keyPrefix, stack.tokens)]);
  redis = new Redis(services.redisUrl);
  metricsBefore = await waitUntil("worker metrics", () => scrape(workerMetricsUrl), 30_000, 200);
});

afterAll(async () => {
  await Promise.all([apiA?.stop(), apiB?.stop(), stack?.stop()]);
  await privateS3?.destroy();
  s3?.destroy();
  redis?.disconnect();
  for (const cleanup of cleanups) cleanup();
});

describe("build artifacts in S3, live logs from any API replica, metrics", () => {
  const first: { id?: string; source?: string; record?: RecordView } = {};

  it("archives the complete log in order, the record and the context; two APIs stream every line; Last-Event-ID resumes without gaps", async () => {
    first.source = fixture("first");
    const id = await submit(apiA.url, buildConfig(first.source, `first-${run}`));
    first.id = id;
    const follow = `/builds/${id}/logs?follow=1`;
    const [onA, onB, interrupted] = await Promise.all([readSse(apiA.url + follow), readSse(apiB.url + follow), readSse(apiB.url + follow, { stopAfter: 40 })]);
    expect(interrupted.ended).toBe(false);
    const resumed = await readSse(apiA.url + follow, { lastEventId: interrupted.events.at(-1)!.id });

    const done = await waitForBuild(apiA.url, id);
    expect(done.status, (await getLog(apiA.url, id)) + stack.logs.join("\n")).toBe("succeeded");
    const archived = await archivedEverything(apiB.url, id);
    first.record = archived;
    expect(archived.contextDigest).toMatch(/^sha256:[0-9a-f]{64}$/);

    const liveLog = await getLog(apiA.url, id); // still from Redis
    const s3Log = await s3Text(`logs/${id}.log`);
    expect(s3Log).toBe(liveLog);
    const lines = s3Log.trimEnd().split("\n");
    for (const line of lines) expect(line).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z \[(status|fetch|build|push)\] /);
    expect(lines[0]).toMatch(/\[status\] queued$/);
    expect(lines.at(-1)).toMatch(/\[status\] succeeded: .*@sha256:/);
    const phases = lines.map((line) => /\[(\w+)\]/.exec(line)![1]);
    expect(phases.indexOf("fetch")).toBeLessThan(phases.indexOf("build"));
    expect(phases.lastIndexOf("build")).toBeLessThan(phases.indexOf("push"));
    // every line the RUN step printed, in order
    const markers = lines.map((line) => /\[build\] marker-line-(\d+)$/.exec(line)?.[1]).filter((n): n is string => n !== undefined);
    expect(markers).toEqual(Array.from({ length: MARKERS }, (_, i) => String(i + 1)));

    // both API processes streamed every event; the interrupted client missed nothing after resuming
    expect(onA.ended && onB.ended && resumed.ended).toBe(true);
    expect(onA.events.map(sseLine).join("\n")).toBe(lines.map((line) => line.replace(/^(\S+ \[status\] \w+).*$/, "$1")).join("\n"));
    expect(onB.events.map((event) => event.id)).toEqual(onA.events.map((event) => event.id));
    expect([...interrupted.events, ...resumed.events].map((event) => event.id)).toEqual(onA.events.map((event) => event.id));

    const stored = JSON.parse(await s3Text(`records/${id}.json`)) as RecordView;
    expect(stored).toMatchObject({ id, status: "succeeded", contextDigest: archived.contextDigest, image: { digest: archived.image!.digest } });
    expect(stored.artifacts).toMatchObject({ log: "uploaded", context: "uploaded", record: "uploaded" });
    // and its keys in the newest-first index GET /builds pages through once Redis forgets the build
    const indexKeys = recordIndexKeys(stored as unknown as BuildRecord);
    expect(indexKeys.length).toBeGreaterThanOrEqual(2);
    for (const key of indexKeys) expect(await s3Text(key)).toBe(`records/${id}.json`);
  });

  it("the archived context is exactly what Docker built: its digest matches and it rebuilds to an image with the same config", async () => {
    const digest = first.record!.contextDigest!.replace(/^sha256:/, "");
    const tar = gunzipSync(await s3Bytes(`contexts/${digest}.tar.gz`));
    expect(createHash("sha256").update(tar).digest("hex")).toBe(digest);
    const rebuiltTag = `m1l0-e2e/rebuilt:${run}`;
    // a user's own Dockerfile gets the worker's labels (build key, image-cache owner) from the build API, not from the context
    const buildKey = first.record!.buildKey!;
    expect(buildKey).toMatch(/^sha256:[0-9a-f]{64}$/);
    const originalLabels = (await docker.getImage(first.record!.image!.reference).inspect()).Config.Labels ?? {};
    expect(originalLabels["ai.m1l0.build-key"]).toBe(buildKey);
    const workerLabels = Object.fromEntries(Object.entries(originalLabels).filter(([key]) => key === "ai.m1l0.build-key" || key === "ai.m1l0.image-cache"));
    const stream = await docker.buildImage(Readable.from([tar]), {
      t: rebuiltTag,
      dockerfile: "Dockerfile",
      networkmode: "none",
      rm: true,
      forcerm: true,
      labels: workerLabels,
    });
    const output: Array<{ error?: string }> = await new Promise((resolve, reject) => docker.modem.followProgress(stream, (error, result) => (error ? reject(error) : resolve(result))));
    expect(output.filter((message) => message.error)).toEqual([]);
    try {
      const original = await docker.getImage(first.record!.image!.reference).inspect();
      const rebuilt = await docker.getImage(rebuiltTag).inspect();
      for (const field of ["Cmd", "Entrypoint", "Env", "WorkingDir", "Labels", "User", "ExposedPorts"] as const) {
        expect(rebuilt.Config[field], field).toEqual(original.Config[field]);
      }
      expect(rebuilt.Config.Env).toContain("M1L0_E2E=artifacts");
      // same content: the COPY layer of identical files has the same diff id
      expect(rebuilt.RootFS.Layers).toEqual(original.RootFS.Layers);
    } finally {
      await docker.getImage(rebuiltTag).remove({ force: true }).catch(() => undefined);
    }
  });

  it("stores an identical context once (content-addressed, not re-uploaded)", async () => {
    const key = `contexts/${first.record!.contextDigest!.replace(/^sha256:/, "")}.tar.gz`;
    const before = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    await new Promise((resolve) => setTimeout(resolve, 1_100)); // LastModified has one-second resolution
    const id = await submit(apiB.url, buildConfig(first.source!, `again-${run}`));
    expect((await waitForBuild(apiB.url, id)).status).toBe("succeeded");
    const again = await archivedEverything(apiA.url, id);
    expect(again.contextDigest).toBe(first.record!.contextDigest);
    const after = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(after.LastModified?.getTime()).toBe(before.LastModified?.getTime());
    expect(after.ETag).toBe(before.ETag);
  });

  it("S3 stopped during a build: the build still succeeds, the log is uploaded once S3 is back", async () => {
    const id = await submit(apiA.url, buildConfig(fixture("outage", "RUN sleep 2"), `outage-${run}`));
    await waitUntil("build to start", async () => ["fetching", "building"].includes((await record(apiA.url, id)).status), 120_000, 50);
    await privateS3.stop();
    const done = await waitForBuild(apiA.url, id);
    expect(done.status, stack.logs.join("\n")).toBe("succeeded");
    // the build finished while S3 was down: its artifacts wait, marked pending (the worker marks
    // them just after the final status, so a fast poll can see the record a moment before)
    const pending = await waitUntil("artifacts marked", async () => { const current = await record(apiA.url, id); return current.artifacts?.log ? current : undefined; }, 10_000, 50);
    expect(pending.artifacts?.log).toBe("pending");
    await new Promise((resolve) => setTimeout(resolve, 2_000)); // at least one failed retry
    expect((await record(apiA.url, id)).artifacts?.log).toBe("pending");

    await privateS3.start();
    const archived = await archivedEverything(apiA.url, id, 120_000);
    const s3Log = await s3Text(`logs/${id}.log`);
    expect(s3Log).toBe(await getLog(apiA.url, id));
    expect(s3Log).toMatch(/\[build\] marker-line-200\n/);
    expect(s3Log.trimEnd().split("\n").at(-1)).toMatch(/\[status\] succeeded/);
    expect(archived.contextDigest).toMatch(/^sha256:/);
    const metrics = await scrape(workerMetricsUrl);
    expect(metrics.get('m1l0_worker_artifact_upload_errors_total{artifact="log"}')).toBeGreaterThan(0);
  });

  it("once Redis forgets the build, its record and log are served from S3", async () => {
    const id = first.id!;
    const liveLog = await getLog(apiA.url, id);
    await redis.del(`${stack.keyPrefix}build:${id}:events`, `${stack.keyPrefix}build:${id}`);
    await redis.zrem(`${stack.keyPrefix}builds`, id);
    expect(await getLog(apiB.url, id)).toBe(liveLog);
    const viaSse = await readSse(`${apiA.url}/builds/${id}/logs?follow=1`);
    expect(viaSse.ended).toBe(true);
    expect(viaSse.events.filter((event) => event.type === "log").length).toBe(liveLog.split("\n").filter((line) => / \[(fetch|build|push)\] /.test(line)).length);
    expect(await record(apiB.url, id)).toMatchObject({ id, status: "succeeded" });
    const list = (await (await apiFetch(`${apiA.url}/builds?limit=500`)).json()) as { builds: RecordView[] };
    expect(list.builds.map((build) => build.id)).toContain(id);
  });

  it("/metrics on the worker and the API parse and moved with the builds", async () => {
    const worker = await scrape(workerMetricsUrl);
    const succeeded = 'm1l0_worker_builds_total{outcome="succeeded"}';
    expect(worker.get(succeeded)! - (metricsBefore.get(succeeded) ?? 0)).toBe(3);
    for (const phase of ["fetch", "build", "push"]) {
      const count = `m1l0_worker_phase_duration_seconds_count{phase="${phase}"}`;
      expect(worker.get(count)! - (metricsBefore.get(count) ?? 0), phase).toBe(3);
      expect(worker.get(`m1l0_worker_phase_duration_seconds_sum{phase="${phase}"}`)).toBeGreaterThan(0);
    }
    expect(worker.get("m1l0_worker_active_builds")).toBe(0);
    const api = await scrape(`${apiA.url}/metrics`);
    expect(api.get('m1l0_queue_jobs{state="completed"}')).toBe(3);
    expect(api.get('m1l0_queue_jobs{state="waiting"}')).toBe(0);
  });
});
