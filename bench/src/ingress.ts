import { createRedis } from "@m1l0/queue";
import { Queue } from "bullmq";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import type { LoadPlan, LoadResult } from "./load-child.js";
import type { Table } from "./report.js";
import { ROOT_DIR, startStack, type Services } from "./stack.js";
import { formatMs, formatRatio, formatSummary, quantile, ratio, summarize } from "./stats.js";
import { runCommand } from "./util.js";
import { topSelfTime, type SelfTime } from "./cpu-profile.js";

export interface IngressOptions {
  closedRepetitions: number;
  closedDurationMs: number;
  openRepetitions: number;
  openDurationMs: number;
  concurrency: number;
  ratePerSecond: number;
  /** one extra closed-loop run against an API under `node --cpu-prof`, its top self time in the notes */
  profile: boolean;
}

/** Must match BuildStore's default prefix (packages/queue/src/store.ts) to clean up the records the API created. */
const STORE_PREFIX = "m1l0:";

/** Runs one load plan in its own process (bench/src/load-child.ts). */
export async function runLoad(plan: LoadPlan): Promise<LoadResult> {
  const child = fileURLToPath(new URL("./load-child.js", import.meta.url));
  const result = await runCommand(process.execPath, [child, JSON.stringify(plan)]);
  return JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "") as LoadResult;
}

async function deleteRecords(services: Services, ids: string[]): Promise<void> {
  const redis = createRedis(services.redisUrl, "producer");
  try {
    for (let start = 0; start < ids.length; start += 1_000) {
      const batch = ids.slice(start, start + 1_000);
      const pipeline = redis.pipeline();
      for (const id of batch) pipeline.del(`${STORE_PREFIX}build:${id}`, `${STORE_PREFIX}build:${id}:events`);
      pipeline.zrem(`${STORE_PREFIX}builds`, ...batch);
      await pipeline.exec();
    }
  } finally {
    await redis.quit();
  }
}

export async function obliterate(services: Services, queueName: string): Promise<void> {
  const connection = createRedis(services.redisUrl, "producer");
  const queue = new Queue(queueName, { connection });
  queue.on("error", () => undefined);
  try {
    await queue.obliterate({ force: true });
  } finally {
    await queue.close();
    await connection.quit();
  }
}

const perSecond = (value: number) => `${value.toFixed(0)}/s`;

/** A closed-loop run against an API of its own under `node --cpu-prof`, not counted in the figures: where its time goes. */
async function profileApi(services: Services, options: IngressOptions, input: Record<string, unknown>): Promise<{ top: SelfTime[]; rate: number }> {
  const profileDir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-ingress-prof-"));
  const stack = await startStack({ worker: false, apiNodeArgs: ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] });
  let result: LoadResult | undefined;
  try {
    result = await runLoad({ apiUrl: stack.apiUrl, apiToken: stack.token, redisUrl: services.redisUrl, queueName: "unused", input, concurrency: options.concurrency, ratePerSecond: options.ratePerSecond, target: "http", shape: "closed", durationMs: options.closedDurationMs });
  } finally {
    await stack.stop(); // the profile is written when the API exits
    if (result) await deleteRecords(services, result.ids).catch(() => undefined);
    await obliterate(services, stack.queueName).catch(() => undefined);
  }
  try {
    const file = readdirSync(profileDir).find((name) => name.endsWith(".cpuprofile"));
    if (!file) throw new Error("the API under node --cpu-prof wrote no profile");
    return { top: topSelfTime(path.join(profileDir, file), 12), rate: (result.completed / result.elapsedMs) * 1000 };
  } finally {
    rmSync(profileDir, { recursive: true, force: true });
  }
}

export async function runIngress(services: Services, options: IngressOptions, log: (line: string) => void): Promise<Table> {
  const input = parseYaml(readFileSync(path.join(ROOT_DIR, "examples/mnist/m1l0.yaml"), "utf8")) as Record<string, unknown>;
  input.repository = "m1l0bench/ingress";
  // No worker: the API's queue and the direct queue only accumulate jobs, obliterated afterwards.
  const stack = await startStack({ worker: false });
  const directQueue = `bench-direct-${randomUUID()}`;
  const base = { apiUrl: stack.apiUrl, apiToken: stack.token, redisUrl: services.redisUrl, queueName: directQueue, input, concurrency: options.concurrency, ratePerSecond: options.ratePerSecond };
  const closed = { http: [] as LoadResult[], queue: [] as LoadResult[] };
  const open = { http: [] as LoadResult[], queue: [] as LoadResult[] };
  const createdIds: string[] = [];
  try {
    for (let rep = 0; rep < options.closedRepetitions; rep++) {
      for (const target of rep % 2 === 0 ? (["queue", "http"] as const) : (["http", "queue"] as const)) {
        const result = await runLoad({ ...base, target, shape: "closed", durationMs: options.closedDurationMs });
        createdIds.push(...result.ids);
        result.ids = [];
        closed[target].push(result);
        log(`ingress closed rep ${rep + 1} ${target}: ${((result.completed / result.elapsedMs) * 1000).toFixed(0)}/s, ${result.errors} errors`);
      }
    }
    for (let rep = 0; rep < options.openRepetitions; rep++) {
      for (const target of rep % 2 === 0 ? (["http", "queue"] as const) : (["queue", "http"] as const)) {
        const result = await runLoad({ ...base, target, shape: "open", durationMs: options.openDurationMs });
        createdIds.push(...result.ids);
        result.ids = [];
        open[target].push(result);
        log(`ingress ${options.ratePerSecond}/s rep ${rep + 1} ${target}: p99 ${formatMs(quantile(result.latenciesMs, 0.99))}, ${result.errors} errors`);
      }
    }
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${stack.recentLogs()}`, { cause: error });
  } finally {
    await stack.stop();
    await deleteRecords(services, createdIds).catch((error: unknown) => log(`ingress: record clean-up failed: ${String(error)}`));
    await obliterate(services, stack.queueName).catch((error: unknown) => log(`ingress: obliterate failed: ${String(error)}`));
    await obliterate(services, directQueue).catch((error: unknown) => log(`ingress: obliterate failed: ${String(error)}`));
  }
  const profile = options.profile ? await profileApi(services, options, input) : undefined;
  if (profile) log(`ingress: profiled run ${perSecond(profile.rate)}`);
  const throughput = (results: LoadResult[]) => summarize(results.map((result) => (result.completed / result.elapsedMs) * 1000));
  const latencies = (results: LoadResult[]) => results.flatMap((result) => result.latenciesMs);
  const errors = (results: LoadResult[]) => results.reduce((sum, result) => sum + result.errors, 0);
  const firstError = [...closed.http, ...closed.queue, ...open.http, ...open.queue].find((result) => result.firstError)?.firstError;
  const httpThroughput = throughput(closed.http);
  const queueThroughput = throughput(closed.queue);
  const throughputRatio = ratio(httpThroughput.median, queueThroughput.median);
  const closedHttp = latencies(closed.http);
  const closedQueue = latencies(closed.queue);
  const openHttp = latencies(open.http);
  const openQueue = latencies(open.queue);
  const openP99 = openHttp.length ? quantile(openHttp, 0.99) : undefined;
  const backlog = [...open.http, ...open.queue].reduce((sum, result) => sum + result.backlog, 0);
  const pct = (samples: number[], q: number) => (samples.length ? formatMs(quantile(samples, q)) : "–");
  const pctRatio = (ours: number[], baseline: number[], q: number) =>
    ours.length && baseline.length ? formatRatio(ratio(quantile(ours, q), quantile(baseline, q))) : "–";
  return {
    title: "5. Ingress — POST /builds vs BullMQ queue.add",
    columns: ["metric", "ours (POST /builds)", "raw queue.add loop", "ratio", "target", "met?"],
    rows: [
      [
        `throughput, ${options.concurrency} concurrent senders`,
        formatSummary(httpThroughput, perSecond),
        formatSummary(queueThroughput, perSecond),
        formatRatio(throughputRatio),
        "≥ 0.5× queue.add",
        throughputRatio === undefined ? "–" : throughputRatio >= 0.5 ? "yes" : "no",
      ],
      ["latency p50 at full load", pct(closedHttp, 0.5), pct(closedQueue, 0.5), pctRatio(closedHttp, closedQueue, 0.5), "", ""],
      ["latency p99 at full load", pct(closedHttp, 0.99), pct(closedQueue, 0.99), pctRatio(closedHttp, closedQueue, 0.99), "", ""],
      [`latency p50 at ${options.ratePerSecond} req/s`, pct(openHttp, 0.5), pct(openQueue, 0.5), pctRatio(openHttp, openQueue, 0.5), "", ""],
      [`latency p99 at ${options.ratePerSecond} req/s`, pct(openHttp, 0.99), pct(openQueue, 0.99), pctRatio(openHttp, openQueue, 0.99), "≤ 15 ms", openP99 === undefined ? "–" : openP99 <= 15 ? "yes" : "no"],
      ["errors (all runs)", String(errors([...closed.http, ...open.http])), String(errors([...closed.queue, ...open.queue])), "", "0", ""],
    ],
    notes: [
      `Load from a separate Node process (bench/src/load-child.ts; node:http Agent with keepAlive). Closed loop: ${options.concurrency} senders for ${options.closedDurationMs / 1000} s × ${options.closedRepetitions} per variant (throughput median over runs, latencies pooled). Open loop: ${options.ratePerSecond} req/s for ${options.openDurationMs / 1000} s × ${options.openRepetitions} per variant, latency from each request's scheduled start (no coordinated omission). Variants alternate; a 300 ms untimed warm-up precedes each run.`,
      "Same payload: the mnist config, each request with its own revision (identical requests would attach to the build in flight). POST /builds validates it, checks the catalog, writes the build record, index entry, first event and in-flight marker in one Lua call and adds the job; the baseline is `queue.add` of the already-parsed payload with the same job options and a fresh jobId, from the same kind of process. API at LOG_LEVEL=info (one log line per request) with authentication on and the per-token submission limit counting in Redis (set far above the load), like production.",
      ...(profile
        ? [
            `Where the API's time goes: one more closed-loop run (${perSecond(profile.rate)}, not counted above) against an API under \`node --cpu-prof\`, top self time (share of the profile's wall time): ${profile.top.map((entry) => `${entry.name} ${formatMs(entry.ms)} (${(entry.share * 100).toFixed(1)} %)`).join("; ")}.`,
          ]
        : []),
      "Why the gap: a POST makes three Redis round trips one after another — the per-token rate-limit count (its own Lua script, before anything is written, so a refused request writes nothing), the record, index entry, first event and in-flight marker (one Lua call) and BullMQ's add script — where the baseline makes one; each request also parses JSON, validates with zod, checks its bearer token (sha256) and writes a log line; the API process is partly idle waiting for those round trips (the profile's (idle)), and the rest is socket writes, GC and the per-request work. On this 2-core machine the API, Redis, the worker-less queue and the load generator share the same cores, which is the floor we measured against; spreading API replicas over cores or hosts raises throughput linearly (stateless API), but not the single-process ratio asked for here.",
      "The API ran without a worker on a queue of its own; both queues were obliterated and the created build records deleted afterwards.",
      ...(backlog > 0 ? [`WARNING: ${backlog} open-loop requests were never sent because ${2_000} were already in flight (the target could not keep the rate).`] : []),
      ...(firstError ? [`First error: ${firstError}`] : []),
    ],
  };
}
