/**
 * Load generator for the ingress benchmark, run as a process of its own so that it does not
 * share an event loop with what it measures. Three targets (POST /builds over keep-alive HTTP,
 * GET /builds/:id of given builds, or BullMQ queue.add directly) and two shapes: closed loop (N concurrent senders, as fast as
 * answers come: throughput) and open loop (a fixed arrival rate: latency at that rate, measured
 * from each request's scheduled start so a stall counts against every request it delays).
 */
import { newBuildId, parseBuildConfig } from "@m1l0/config";
import { BUILD_JOB_NAME, DEFAULT_BUILD_JOB_OPTIONS, createRedis, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import http from "node:http";

export interface LoadPlan {
  target: "http" | "get" | "queue";
  shape: "closed" | "open";
  /** http: API base URL */
  apiUrl?: string;
  /** http: bearer token sent with every request */
  apiToken?: string;
  /** get: the builds to read, in turn */
  getIds?: string[];
  /** queue: Redis URL and queue name */
  redisUrl?: string;
  queueName?: string;
  /** the build config as a user submits it */
  input: Record<string, unknown>;
  durationMs: number;
  /** closed loop: concurrent senders */
  concurrency: number;
  /** open loop: requests per second */
  ratePerSecond: number;
}

export interface LoadResult {
  completed: number;
  errors: number;
  firstError?: string;
  elapsedMs: number;
  latenciesMs: number[];
  /** build ids created through the API, for clean-up */
  ids: string[];
  /** open loop: requests still waiting when time was up (the target could not keep the rate) */
  backlog: number;
}

type Send = () => Promise<string | undefined>;

function httpSender(plan: LoadPlan): Send {
  const url = new URL("/builds", plan.apiUrl);
  const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(plan.concurrency, 64) });
  // Each request is a different build (its own revision): identical requests would attach to
  // the build in flight instead of creating one.
  let sequence = 0;
  return () =>
    new Promise((resolve, reject) => {
      const body = Buffer.from(JSON.stringify({ ...plan.input, revision: `load-${process.pid}-${sequence++}` }));
      const request = http.request(url, { method: "POST", agent, headers: { "content-type": "application/json", "content-length": body.length, ...(plan.apiToken ? { authorization: `Bearer ${plan.apiToken}` } : {}) } }, (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          if (response.statusCode !== 202) return reject(new Error(`HTTP ${response.statusCode}: ${text.slice(0, 200)}`));
          resolve((JSON.parse(text) as { id: string }).id);
        });
        response.on("error", reject);
      });
      request.on("error", reject);
      request.end(body);
    });
}

function getSender(plan: LoadPlan): Send {
  const ids = plan.getIds ?? [];
  if (ids.length === 0) throw new Error("target get needs getIds");
  const agent = new http.Agent({ keepAlive: true, maxSockets: Math.max(plan.concurrency, 64) });
  let sequence = 0;
  return () =>
    new Promise((resolve, reject) => {
      const url = new URL(`/builds/${ids[sequence++ % ids.length]!}`, plan.apiUrl);
      const request = http.request(url, { agent, headers: plan.apiToken ? { authorization: `Bearer ${plan.apiToken}` } : {} }, (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          if (response.statusCode !== 200) return reject(new Error(`HTTP ${response.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 200)}`));
          resolve(undefined);
        });
        response.on("error", reject);
      });
      request.on("error", reject);
      request.end();
    });
}

function queueSender(plan: LoadPlan, queue: Queue<BuildJobData>): Send {
  // Parsed once: the API validates per request, the raw baseline only enqueues.
  const config = parseBuildConfig(plan.input);
  let sequence = 0;
  return async () => {
    const buildId = newBuildId();
    await queue.add(BUILD_JOB_NAME, { buildId, config: { ...config, revision: `load-${process.pid}-${sequence++}` } }, { ...DEFAULT_BUILD_JOB_OPTIONS, jobId: buildId });
    return undefined;
  };
}

async function closedLoop(send: Send, plan: LoadPlan, result: LoadResult): Promise<void> {
  const started = performance.now();
  const deadline = started + plan.durationMs;
  const sender = async () => {
    while (performance.now() < deadline) {
      const sent = performance.now();
      try {
        const id = await send();
        result.latenciesMs.push(performance.now() - sent);
        result.completed++;
        if (id) result.ids.push(id);
      } catch (error) {
        result.errors++;
        result.firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: plan.concurrency }, sender));
  result.elapsedMs = performance.now() - started;
}

/** Bound on requests in flight in the open loop, so an overloaded target cannot exhaust memory. */
const MAX_IN_FLIGHT = 2_000;

async function openLoop(send: Send, plan: LoadPlan, result: LoadResult): Promise<void> {
  const started = performance.now();
  const total = Math.round((plan.durationMs / 1000) * plan.ratePerSecond);
  const interval = 1000 / plan.ratePerSecond;
  const pending = new Set<Promise<void>>();
  for (let index = 0; index < total; index++) {
    const scheduled = started + index * interval;
    const wait = scheduled - performance.now();
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait));
    if (pending.size >= MAX_IN_FLIGHT) {
      result.backlog = total - index;
      break;
    }
    const request: Promise<void> = send()
      .then((id) => {
        result.latenciesMs.push(performance.now() - scheduled);
        result.completed++;
        if (id) result.ids.push(id);
      })
      .catch((error: unknown) => {
        result.errors++;
        result.firstError ??= error instanceof Error ? error.message : String(error);
      })
      .finally(() => pending.delete(request));
    pending.add(request);
  }
  await Promise.all(pending);
  result.elapsedMs = performance.now() - started;
}

const plan = JSON.parse(process.argv[2] ?? "{}") as LoadPlan;
const result: LoadResult = { completed: 0, errors: 0, elapsedMs: 0, latenciesMs: [], ids: [], backlog: 0 };
let queue: Queue<BuildJobData> | undefined;
let send: Send;
if (plan.target === "http") {
  send = httpSender(plan);
} else if (plan.target === "get") {
  send = getSender(plan);
} else {
  const connection = createRedis(plan.redisUrl ?? "redis://127.0.0.1:6379", "producer");
  queue = new Queue<BuildJobData>(plan.queueName ?? "", { connection });
  queue.on("error", () => undefined);
  await queue.waitUntilReady();
  send = queueSender(plan, queue);
}
// A short untimed warm-up: connections, JIT.
const warmupPlan = { ...plan, durationMs: 300 };
await closedLoop(send, warmupPlan, { ...result, latenciesMs: [], ids: result.ids });
await (plan.shape === "closed" ? closedLoop(send, plan, result) : openLoop(send, plan, result));
await queue?.close();
// Exit only once the result is flushed: stdout to a pipe is asynchronous, and exiting earlier truncates it.
// Exiting at all because keep-alive sockets would otherwise hold the process open.
process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
