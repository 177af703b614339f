/**
 * Benchmark 9, scale of state: how Redis bytes, request latency, history paging and worker
 * memory grow with the number of builds. Every stack and store here has a key prefix and queue
 * of its own, deleted afterwards, so nothing else in the shared Redis is touched or counted.
 */
import { parseBuildConfig } from "@m1l0/config";
import { BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { apiFetch } from "@m1l0/testkit";
import { Queue } from "bullmq";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { obliterate, runLoad } from "./ingress.js";
import type { LoadPlan, LoadResult } from "./load-child.js";
import type { Table } from "./report.js";
import { deletePrefix, prefixMemory, seedFinished, seedHistory, seedQueued, type FinishedTemplate, type PrefixMemory } from "./scale-state.js";
import { fastFailingInput, runWorkerScale, type WorkerScaleResult } from "./scale-worker.js";
import { startStack, type Services } from "./stack.js";
import { formatBytes, formatMs, formatRatio, quantile, ratio } from "./stats.js";
import { shortId } from "./util.js";

export interface ScaleOptions {
  /** finished builds at which Redis bytes are measured, ascending (issue: 1k and 10k) */
  finished: number[];
  /** builds waiting in the queue while the API is measured; the first is the idle baseline */
  queued: number[];
  ratePerSecond: number;
  loadDurationMs: number;
  repetitions: number;
  historyRecords: number;
  historyRequests: number;
  workerBuilds: number;
}

/** Connections the finished builds are seeded over (each BuildStore serialises its own updates). */
const SEED_STORES = 8;
/** GET /builds/:id cycles through this many of the queued builds */
const GET_IDS = 500;
const HISTORY_PAGE = 50;

const percent = (value: number | undefined) => (value === undefined ? "–" : `${(value * 100).toFixed(1)} %`);
const within = (value: number | undefined, limit: number) => (value === undefined ? "–" : value <= limit ? "yes" : "no");

async function measureFinishedBytes(services: Services, template: FinishedTemplate, counts: number[], log: (line: string) => void): Promise<{ points: Array<{ builds: number } & PrefixMemory>; freshStreamBytes: number }> {
  const prefix = `bench-scale-${shortId()}-f:`;
  const connections = Array.from({ length: SEED_STORES }, () => createRedis(services.redisUrl, "producer"));
  const stores = connections.map((redis) => new BuildStore(redis, prefix));
  const points: Array<{ builds: number } & PrefixMemory> = [];
  try {
    let seeded = 0;
    for (const count of counts) {
      const started = performance.now();
      await seedFinished(stores, template, count - seeded);
      seeded = count;
      const memory = await prefixMemory(connections[0]!, prefix);
      log(`scale: ${count} finished builds seeded in ${formatMs(performance.now() - started)}: ${memory.bytes} bytes in ${memory.keys} keys`);
      points.push({ builds: count, ...memory });
    }
    // the floor of an event stream: a new stream holding only the first event, written raw
    const floorKey = `${prefix}floor`;
    await connections[0]!.xadd(floorKey, "*", "e", JSON.stringify(template.events[0] ?? {}));
    const freshStreamBytes = Number(await connections[0]!.call("MEMORY", "USAGE", floorKey, "SAMPLES", "0"));
    return { points, freshStreamBytes };
  } finally {
    await deletePrefix(connections[0]!, prefix);
    await Promise.all(connections.map((redis) => redis.quit()));
  }
}

interface LevelResult {
  queued: number;
  post: number[];
  /** the floor: raw BullMQ queue.add at the same rate onto the same queue */
  raw: number[];
  get: number[];
  errors: number;
  firstError?: string;
}

interface ApiScaleResult {
  levels: LevelResult[];
  history: { first: number[]; deep: number[]; rawFirst: number[]; depth: number; seedMs: number };
}

async function timeRequests(count: number, request: () => Promise<void>): Promise<number[]> {
  const samples: number[] = [];
  for (let index = 0; index < count; index++) {
    const started = performance.now();
    await request();
    samples.push(performance.now() - started);
  }
  return samples;
}

async function getPage(url: string): Promise<{ builds: unknown[]; nextCursor: string | null }> {
  const response = await apiFetch(url);
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}: ${(await response.text()).slice(0, 200)}`);
  return (await response.json()) as { builds: unknown[]; nextCursor: string | null };
}

async function runApiScale(services: Services, template: FinishedTemplate, options: ScaleOptions, log: (line: string) => void): Promise<ApiScaleResult> {
  const keyPrefix = `bench-scale-${shortId()}-a:`;
  // an empty archive of its own: the history pages merge Redis with the artifact store
  const artifactsDir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-scale-"));
  const stack = await startStack({ worker: false, keyPrefix, apiEnv: { ARTIFACTS_DIR: artifactsDir } });
  const redis = createRedis(services.redisUrl, "producer");
  const store = new BuildStore(redis, keyPrefix);
  const queue = new Queue<BuildJobData>(stack.queueName, { connection: redis });
  queue.on("error", () => undefined);
  const input = { ...fastFailingInput(services), repository: "m1l0bench/scale-api" };
  const config = parseBuildConfig(input);
  const base = { apiUrl: stack.apiUrl, apiToken: stack.token, input, concurrency: 16, ratePerSecond: options.ratePerSecond, shape: "open", durationMs: options.loadDurationMs } as const;
  const reset = async () => {
    await obliterate(services, stack.queueName);
    await deletePrefix(redis, keyPrefix);
  };
  const levels = new Map<number, LevelResult>(options.queued.map((queued) => [queued, { queued, post: [], raw: [], get: [], errors: 0 }]));
  const record = (level: LevelResult, result: LoadResult) => {
    level.errors += result.errors;
    level.firstError ??= result.firstError;
  };
  try {
    // an untimed round first: the idle level must not be the one that pays for a cold API (JIT, pools)
    await reset();
    const warmup = await runLoad({ ...base, target: "http" } satisfies LoadPlan);
    await runLoad({ ...base, target: "get", getIds: warmup.ids.slice(0, GET_IDS) } satisfies LoadPlan);
    for (let rep = 0; rep < options.repetitions; rep++) {
      // alternate the order so drift over the run (other load on the machine) hits every level alike
      for (const queued of rep % 2 === 0 ? options.queued : [...options.queued].reverse()) {
        const level = levels.get(queued)!;
        await reset();
        const seeded = await seedQueued(store, queue, template.record, config, queued);
        let post: LoadResult | undefined;
        for (const target of rep % 2 === 0 ? (["http", "queue"] as const) : (["queue", "http"] as const)) {
          const result = await runLoad({ ...base, target, redisUrl: services.redisUrl, queueName: stack.queueName } satisfies LoadPlan);
          record(level, result);
          (target === "http" ? level.post : level.raw).push(...result.latenciesMs);
          if (target === "http") post = result;
        }
        if (!post) throw new Error("no POST run");
        const getIds = (seeded.length > 0 ? seeded : post.ids).slice(0, GET_IDS);
        const get = await runLoad({ ...base, target: "get", getIds } satisfies LoadPlan);
        record(level, get);
        level.get.push(...get.latenciesMs);
        log(`scale: ${queued} queued, rep ${rep + 1}: POST p99 ${formatMs(quantile(post.latenciesMs, 0.99))}, raw queue.add p99 ${formatMs(quantile(level.raw, 0.99))}, GET p99 ${formatMs(quantile(get.latenciesMs, 0.99))}, ${post.errors + get.errors} errors`);
      }
    }
    await reset();
    const history = await measureHistory(stack.apiUrl, redis, store, keyPrefix, template, options, log);
    return { levels: [...levels.values()], history };
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${stack.recentLogs()}`, { cause: error });
  } finally {
    await stack.stop();
    await queue.close();
    await reset().catch((error: unknown) => log(`scale: clean-up failed: ${String(error)}`));
    await redis.quit();
    rmSync(artifactsDir, { recursive: true, force: true });
  }
}

async function measureHistory(apiUrl: string, redis: ReturnType<typeof createRedis>, store: BuildStore, keyPrefix: string, template: FinishedTemplate, options: ScaleOptions, log: (line: string) => void): Promise<ApiScaleResult["history"]> {
  const started = performance.now();
  // one second apart: 100,000 records span 28 hours, inside the 7-day retention of the index
  await seedHistory(store, template.record, options.historyRecords, 1_000);
  const seedMs = performance.now() - started;
  log(`scale: ${options.historyRecords} history records seeded in ${formatMs(seedMs)}`);
  // walk half-way down in pages of 500 (the largest), then time the default page there
  let cursor: string | null = null;
  let depth = 0;
  while (depth < options.historyRecords / 2) {
    const page = await getPage(`${apiUrl}/builds?limit=500${cursor ? `&cursor=${cursor}` : ""}`);
    depth += page.builds.length;
    cursor = page.nextCursor;
    if (!cursor) throw new Error(`the history ended after ${depth} of ${options.historyRecords} records`);
  }
  const deepCursor = cursor;
  const first = await timeRequests(options.historyRequests, async () => {
    const page = await getPage(`${apiUrl}/builds`);
    if (page.builds.length !== HISTORY_PAGE) throw new Error(`first page held ${page.builds.length} builds`);
  });
  const deep = await timeRequests(options.historyRequests, async () => {
    const page = await getPage(`${apiUrl}/builds?cursor=${deepCursor}`);
    if (page.builds.length !== HISTORY_PAGE) throw new Error(`deep page held ${page.builds.length} builds`);
  });
  // the floor: the same Redis reads from this process, raw (index range, then the records)
  const rawFirst = await timeRequests(options.historyRequests, async () => {
    const ids = await redis.zrange(`${keyPrefix}builds`, "+inf", "-inf", "BYSCORE", "REV", "LIMIT", 0, HISTORY_PAGE + 1);
    await redis.mget(ids.map((id) => `${keyPrefix}build:${id}`));
  });
  return { first, deep, rawFirst, depth, seedMs };
}

export async function runScale(services: Services, options: ScaleOptions, log: (line: string) => void): Promise<Table> {
  const worker = await runWorkerScale(services, { builds: options.workerBuilds, keyPrefix: `bench-scale-${shortId()}-w:` }, log);
  const finished = await measureFinishedBytes(services, worker.template, options.finished, log);
  const api = await runApiScale(services, worker.template, options, log);
  return scaleTable(options, worker, finished, api);
}

function scaleTable(options: ScaleOptions, worker: WorkerScaleResult, bytes: Awaited<ReturnType<typeof measureFinishedBytes>>, api: ApiScaleResult): Table {
  const finished = bytes.points;
  const perBuild = finished.map((point) => point.bytes / point.builds);
  const firstPerBuild = perBuild[0];
  const lastPerBuild = perBuild[perBuild.length - 1];
  const growth = ratio(lastPerBuild, firstPerBuild);
  const payload = Buffer.byteLength(JSON.stringify(worker.template.record)) + worker.template.events.reduce((sum, event) => sum + Buffer.byteLength(JSON.stringify(event)), 0);
  const [idle, ...busier] = api.levels;
  const p99 = (samples: number[]) => (samples.length ? quantile(samples, 0.99) : undefined);
  const pct = (samples: number[], q: number) => (samples.length ? formatMs(quantile(samples, q)) : "–");
  const collected = worker.collected;
  const rssGrowth = ratio(worker.rssAfterBytes - worker.rssBeforeBytes, worker.rssBeforeBytes);
  const rows: string[][] = [
    ...finished.map((point, index) => [
      `Redis bytes per finished build at ${point.builds}`,
      `${perBuild[index]!.toFixed(0)} B (${formatBytes(point.bytes)} in ${point.keys} keys)`,
      `${payload} B of JSON`,
      formatRatio(ratio(perBuild[index], payload)),
      index === finished.length - 1 ? "constant ±10 %" : "",
      index === finished.length - 1 ? (growth === undefined ? "–" : Math.abs(growth - 1) <= 0.1 ? "yes" : "no") : "",
    ]),
    ...finished.map((point) => [
      `  of which records / events / index, at ${point.builds}`,
      [point.records, point.events, point.index].map((bytes) => `${(bytes / point.builds).toFixed(0)} B`).join(" / ") + (point.other ? `, other ${(point.other / point.builds).toFixed(0)} B` : ""),
      `new stream, 1 event: ${bytes.freshStreamBytes} B`,
      "",
      "",
      "",
    ]),
    [`  growth ${finished[0]?.builds} → ${finished[finished.length - 1]?.builds}`, formatRatio(growth), "", "", "", ""],
    [`  real worker builds (${worker.realBytes.builds})`, `${(worker.realBytes.bytes / worker.realBytes.builds).toFixed(0)} B (${worker.realBytes.keys} keys)`, "", "", "(cross-check)", ""],
  ];
  if (idle) {
    const rawCell = (level: LevelResult) => (level.raw.length ? `queue.add ${pct(level.raw, 0.99)}${level === idle ? "" : ` (${formatRatio(ratio(p99(level.raw), p99(idle.raw)))} its idle)`}` : "–");
    for (const [kind, pick] of [
      ["POST /builds", (level: LevelResult) => level.post],
      ["GET /builds/:id", (level: LevelResult) => level.get],
    ] as const) {
      const baseline = (level: LevelResult) => (kind === "POST /builds" ? rawCell(level) : "");
      rows.push([`${kind} p99 at ${options.ratePerSecond} req/s, ${idle.queued} queued (idle)`, pct(pick(idle), 0.99), baseline(idle), "", "", ""]);
      for (const level of busier) {
        const ratioToIdle = ratio(p99(pick(level)), p99(pick(idle)));
        const last = level === busier[busier.length - 1];
        rows.push([`${kind} p99, ${level.queued} queued (ratio: ÷ idle p99)`, pct(pick(level), 0.99), baseline(level), formatRatio(ratioToIdle), last ? "≤ 1.2× idle" : "", last ? within(ratioToIdle, 1.2) : ""]);
      }
    }
  }
  const errors = api.levels.reduce((sum, level) => sum + level.errors, 0);
  rows.push(["  errors (all load runs)", String(errors), "", "", "0", ""]);
  const { first, deep, rawFirst } = api.history;
  rows.push(
    [`GET /builds first page (${HISTORY_PAGE}), ${options.historyRecords} records, p50 / p99`, `${pct(first, 0.5)} / ${pct(first, 0.99)}`, `${pct(rawFirst, 0.5)} / ${pct(rawFirst, 0.99)}`, formatRatio(ratio(quantile(first, 0.5), quantile(rawFirst, 0.5))), "≤ 100 ms", within(quantile(first, 0.99), 100)],
    [`GET /builds page at record ${api.history.depth} (cursor), p50 / p99`, `${pct(deep, 0.5)} / ${pct(deep, 0.99)}`, "", "", "≤ 100 ms", within(quantile(deep, 0.99), 100)],
    [
      `worker RSS before → after ${worker.builds} builds`,
      `${formatBytes(worker.rssBeforeBytes)} → ${formatBytes(worker.rssAfterBytes)} (peak ${formatBytes(worker.rssPeakBytes)})`,
      "",
      percent(rssGrowth),
      "≤ 10 %",
      within(rssGrowth, 0.1),
    ],
    [
      `  V8 heap used / reserved (of which new space), same readings`,
      `${formatBytes(worker.heapBefore.usedBytes)} / ${formatBytes(worker.heapBefore.totalBytes)} (${formatBytes(worker.heapBefore.newSpaceBytes)}) → ${formatBytes(worker.heapAfter.usedBytes)} / ${formatBytes(worker.heapAfter.totalBytes)} (${formatBytes(worker.heapAfter.newSpaceBytes)})`,
      "",
      "",
      "(evidence)",
      "",
    ],
    [
      `  after a full GC: live heap, then RSS, over ${worker.builds} more builds`,
      `${formatBytes(collected.before.usedBytes)} → ${formatBytes(collected.after.usedBytes)}; RSS ${formatBytes(collected.before.rssBytes)} → ${formatBytes(collected.after.rssBytes)}`,
      "",
      `${percent(ratio(collected.after.usedBytes - collected.before.usedBytes, collected.before.usedBytes))}; RSS ${percent(ratio(collected.after.rssBytes - collected.before.rssBytes, collected.before.rssBytes))}`,
      "(evidence)",
      "",
    ],
  );
  const outcomes = [...worker.outcomes].map(([code, count]) => `${code} × ${count}`).join(", ");
  return {
    title: "9. Scale of state",
    columns: ["metric", "ours", "baseline", "ratio", "target", "met?"],
    rows,
    notes: [
      `Redis bytes: the sum of \`MEMORY USAGE <key> SAMPLES 0\` over every key of a prefix of its own (SCAN), divided by the builds in it; that is the record, the event stream and the build's share of the index sorted set (\`<prefix>builds\`; in-flight markers are released when a build ends). Finished builds are written through BuildStore as a real build writes them: the API's create script, then the template build's transitions and log appends in its order, the last one patching in what the worker added to the record (${worker.template.events.length} events). The template is a real build the worker finished moments before (status ${worker.template.record.status}${worker.template.record.error ? `, ${worker.template.record.error.code}` : ""}). Baseline column: the JSON of that record and its events, the payload itself; for the breakdown, the raw floor of a stream: MEMORY USAGE of a new stream holding one such event, written with a bare XADD (Redis allocates a new stream's listpack at up to 4 KiB, stream-node-max-bytes, whatever it holds, so a few short status events cost about 4.8 KB of the total; that is Redis's layout, not data we write). BullMQ's own job hashes are not counted: they are capped (removeOnComplete 1,000, removeOnFail 5,000 jobs), so they do not grow with the history. Cross-check row: the bytes under the worker stack's prefix after its real builds (API + worker), divided by their number.`,
      `API latency: one API process without a worker (builds stay queued), auth and rate limit on; load from bench/src/load-child.ts, open loop at ${options.ratePerSecond} req/s for ${options.loadDurationMs / 1000} s per run, ${options.repetitions} run(s) per level, latency from each request's scheduled start; one untimed POST and GET run first warms the API. Before each level the queue is obliterated and the prefix deleted, then the level's builds are queued as POST /builds queues them (create script + queue.add with the API's job options, pipelined, no HTTP). Baseline (the floor at the same backlog): raw BullMQ queue.add of the same payload at the same rate onto the same queue, from the same kind of process (load-child's queue target), run alternately before or after the POST run. Each of the two adds ${(options.ratePerSecond * options.loadDurationMs) / 1000} jobs, so the runs that follow see that many more. GET /builds/:id cycles through ${GET_IDS} of the level's queued builds (at 0 queued, those the POST run made).`,
      `History: ${options.historyRecords} final records (copies of the template's final record) written by BuildStore's create script, 64 in flight (pipelined), in ${formatMs(api.history.seedMs)}, createdAt 1 s apart; they are the Redis half of the history (the 7-day retention); the API's archive (ARTIFACTS_DIR) is an empty folder of its own here, so no page reads the artifact store. ${options.historyRequests} sequential requests per page, admin token, default page size ${HISTORY_PAGE}; the deep page's cursor was reached by walking pages of 500. Baseline: the first page's Redis reads (ZRANGE BYSCORE REV LIMIT ${HISTORY_PAGE + 1}, MGET) issued raw from the benchmark process.`,
      `Worker RSS: VmRSS from /proc/<pid>/status of the worker process the test-kit stack spawned (concurrency 2), read after 1 s idle following 20 warm-up builds and again after ${worker.builds} more; peak is the highest reading between batches of 25. All builds are fast-failing ones (source s3://…/does-not-exist.tar.gz: picked up, fetch fails, record and log archived to a folder of its own); outcomes: ${outcomes}. No Docker work is in them, so this is the worker's own bookkeeping per build (queue, store, archive, logs), not the daemon client's. Evidence rows: V8's heap from the worker's own /metrics (prom-client) at the two RSS readings; then a second round of as many builds on the same worker, each end read right after a full GC (the worker runs with --heapsnapshot-signal; a snapshot collects first, and /metrics answers once it is written): live heap growth there is what a leak would show, RSS growth beyond it is V8 sizing its heap before collecting.`,
      ...(api.levels.find((level) => level.firstError) ? [`First error: ${api.levels.find((level) => level.firstError)?.firstError}`] : []),
    ],
  };
}
