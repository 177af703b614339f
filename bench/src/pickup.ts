import { newBuildId, parseBuildConfig, type BuildRecord } from "@m1l0/config";
import { BUILD_JOB_NAME, BuildStore, DEFAULT_BUILD_JOB_OPTIONS, createRedis, type BuildJobData } from "@m1l0/queue";
import { Job, Queue } from "bullmq";
import type { Table } from "./report.js";
import { startStack, type RunningStack, type Services } from "./stack.js";
import { formatMs, formatSummary, quantile, summarize } from "./stats.js";
import { between, forgetNamespace, postBuild, shortId, sleep, waitForTerminal } from "./util.js";

const WARMUP_BUILDS = 2;
/** Lets the worker go back to waiting for jobs, so every pickup starts from an idle worker. */
const IDLE_PAUSE_MS = 100;
const TARGET_MS = 10;
/** The waiting builds are due long after the benchmark ends (and are removed with the queue). */
const WAITING_DELAY_MS = 6 * 3600_000;
const FILL_CHUNK = 500;

export interface PickupOptions {
  /** measured builds per variant */
  builds: number;
  /** builds waiting in the queue during the second variant */
  waiting: number;
}

interface Measured {
  pickups: number[];
  /** where each pickup went: queued → job added (API), → job taken (BullMQ's wake-up and move to active), → fetching (the worker's steps before it) */
  parts: { api: number[]; delivery: number[]; worker: number[] };
  roundTrips: number[];
  codes: Map<string, number>;
}

/** Builds submitted one at a time through POST /builds, each after the worker went idle again. */
async function measurePickups(stack: RunningStack, queue: Queue<BuildJobData>, input: Record<string, unknown>, builds: number): Promise<Measured> {
  const measured: Measured = { pickups: [], parts: { api: [], delivery: [], worker: [] }, roundTrips: [], codes: new Map() };
  for (let index = 0; index < WARMUP_BUILDS + builds; index++) {
    await sleep(IDLE_PAUSE_MS);
    const started = performance.now();
    const id = await postBuild(stack.apiUrl, input);
    const record = await waitForTerminal(stack.apiUrl, id, { pollMs: 5, timeoutMs: 60_000 });
    if (index < WARMUP_BUILDS) continue;
    measured.roundTrips.push(performance.now() - started);
    const code = record.error?.code ?? record.status;
    measured.codes.set(code, (measured.codes.get(code) ?? 0) + 1);
    const pickup = between(record, "queued", "fetching");
    if (pickup === undefined) throw new Error(`build ${id} has no queued/fetching timestamps: ${JSON.stringify(record.timestamps)}`);
    measured.pickups.push(pickup);
    // the job's own timestamps (ms since the epoch): added by the API, taken by the worker
    const job = await Job.fromId(queue, id);
    const [queued, fetching] = [Date.parse(record.timestamps.queued ?? ""), Date.parse(record.timestamps.fetching ?? "")];
    if (job?.processedOn) {
      measured.parts.api.push(job.timestamp - queued);
      measured.parts.delivery.push(job.processedOn - job.timestamp);
      measured.parts.worker.push(fetching - job.processedOn);
    }
  }
  return measured;
}

/**
 * `count` builds waiting in the stack's queue the worker is not yet allowed to take: a queued
 * record each (written the way the API writes it) and its job, added with a delay of hours (the
 * queue's delayed set, where builds wait out a retry backoff). Jobs the worker could take would
 * be taken first: the queue is FIFO, so a new build would wait for all of them to be built.
 */
async function fillQueue(services: Services, stack: RunningStack, queue: Queue<BuildJobData>, input: Record<string, unknown>, count: number): Promise<void> {
  const redis = createRedis(services.redisUrl, "producer");
  const store = new BuildStore(redis, stack.keyPrefix);
  const config = parseBuildConfig(input);
  try {
    for (let done = 0; done < count; done += FILL_CHUNK) {
      const now = new Date().toISOString();
      const records: BuildRecord[] = Array.from({ length: Math.min(FILL_CHUNK, count - done) }, () => ({ id: newBuildId(), status: "queued", config, createdAt: now, updatedAt: now, timestamps: { queued: now }, attempts: 0 }));
      await Promise.all(records.map((record) => store.create(record)));
      await queue.addBulk(records.map((record) => ({ name: BUILD_JOB_NAME, data: { buildId: record.id, config }, opts: { ...DEFAULT_BUILD_JOB_OPTIONS, jobId: record.id, delay: WAITING_DELAY_MS } })));
    }
  } finally {
    await redis.quit();
  }
}

async function waitingJobs(queue: Queue<BuildJobData>): Promise<number> {
  const counts = await queue.getJobCounts("wait", "delayed", "prioritized", "active");
  return (counts.wait ?? 0) + (counts.delayed ?? 0) + (counts.prioritized ?? 0);
}

export async function runPickup(services: Services, options: PickupOptions, log: (line: string) => void): Promise<Table> {
  // a namespace of its own: the waiting builds' records go with it
  const keyPrefix = `bench-pickup-${shortId()}:`;
  const stack = await startStack({ worker: true, workerConcurrency: 1, keyPrefix });
  const queueConnection = createRedis(services.redisUrl, "producer");
  const queue = new Queue<BuildJobData>(stack.queueName, { connection: queueConnection });
  // Fails right after pickup (SOURCE_NOT_FOUND): the queued → fetching gap is all that is measured.
  const input = {
    service: "dockerhub",
    repository: "m1l0bench/pickup",
    source: `s3://${services.s3Bucket}/does-not-exist.tar.gz`,
    framework: "python",
    pyversion: "3.11",
  };
  let idle: Measured;
  let loaded: Measured;
  let fillMs: number;
  try {
    idle = await measurePickups(stack, queue, input, options.builds);
    const fillStarted = performance.now();
    await fillQueue(services, stack, queue, input, options.waiting);
    fillMs = performance.now() - fillStarted;
    const before = await waitingJobs(queue);
    if (before !== options.waiting) throw new Error(`the queue holds ${before} waiting jobs, not ${options.waiting}`);
    log(`pickup: ${options.waiting} builds waiting (${formatMs(fillMs)} to add)`);
    loaded = await measurePickups(stack, queue, input, options.builds);
    const after = await waitingJobs(queue);
    if (after !== options.waiting) throw new Error(`the waiting builds moved during the measurement: ${after} of ${options.waiting} left`);
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${stack.recentLogs()}`, { cause: error });
  } finally {
    await stack.stop();
    await queue.obliterate({ force: true }).catch((error: Error) => log(`pickup: cannot remove the queue ${stack.queueName}: ${error.message}`));
    await queue.close();
    await queueConnection.quit();
    await forgetNamespace(services, keyPrefix).catch((error: Error) => log(`pickup: cannot delete the ${keyPrefix}* keys: ${error.message}`));
  }
  return pickupTable(services, options, idle, loaded);
}

function partRows(measured: Measured): Array<[string, string]> {
  const { api, delivery, worker } = measured.parts;
  const p50p99 = (values: number[]) => (values.length ? `p50 ${formatMs(quantile(values, 0.5))}, p99 ${formatMs(quantile(values, 0.99))}` : "–");
  return [
    ["queued → job added (API: record, then queue.add)", p50p99(api)],
    ["job added → taken (BullMQ: worker wake-up, move to active)", p50p99(delivery)],
    ["taken → fetching (worker: job log line, record read for the cancel check and log spool seed, in one round trip)", p50p99(worker)],
  ];
}

function pickupTable(services: Services, options: PickupOptions, idle: Measured, loaded: Measured): Table {
  const rows: string[][] = [];
  const variants = [
    ["idle queue", idle],
    [`${options.waiting.toLocaleString("en-US")} builds waiting`, loaded],
  ] as const;
  for (const [name, measured] of variants) {
    const p99 = quantile(measured.pickups, 0.99);
    rows.push(
      [`${name}: pickup p50 (queued → fetching)`, formatMs(quantile(measured.pickups, 0.5)), "–", "–", "", ""],
      [`${name}: pickup p99 (queued → fetching)`, formatMs(p99), "–", "–", `≤ ${TARGET_MS} ms`, p99 <= TARGET_MS ? "yes" : "no"],
      [`${name}: pickup, all`, formatSummary(summarize(measured.pickups), formatMs), "", "", "", ""],
      ...partRows(measured).map(([part, value]) => [`  ${part}`, value, "", "", "", ""]),
      [`${name}: POST → failed seen by the client`, formatSummary(summarize(measured.roundTrips), formatMs), "", "", "(informative)", ""],
    );
  }
  const outcomes = [...idle.codes, ...loaded.codes].map(([code, count]) => `${code} × ${count}`).join(", ");
  return {
    title: "6. Pickup latency — enqueue to worker start, idle worker, idle and deep queue",
    columns: ["metric", "ours", "baseline", "ratio", "target", "met?"],
    rows,
    notes: [
      `${options.builds} builds per variant submitted one at a time through POST /builds to one idle worker (concurrency 1), ${IDLE_PAUSE_MS} ms apart, each after ${WARMUP_BUILDS} uncounted warm-up builds. Each uses source s3://${services.s3Bucket}/does-not-exist.tar.gz and fails right after pickup (outcomes: ${outcomes}). First on an empty queue, then with ${options.waiting.toLocaleString("en-US")} builds waiting in the same queue.`,
      `The waiting builds: a queued record each, written with the store's create script as the API writes it (same namespace, same index), and its BullMQ job, added with a ${WAITING_DELAY_MS / 3600_000} h delay, so they wait in the queue's delayed set (where builds wait out a retry backoff) and the worker is not allowed to take them yet. Why not plain waiting jobs: the queue is FIFO, so a build submitted behind 10,000 waiting jobs is picked up after all of them are built — that is throughput, not pickup. Nor prioritized jobs: BullMQ serves its wait list before its prioritized set, so the new build would be picked first, but between measured builds the worker would take and run the prioritized ones. The queue's counts are checked before and after: all ${options.waiting.toLocaleString("en-US")} still wait when the measurement ends.`,
      "Pickup is the gap between the API's `queued` timestamp (set before the record is written and the job added) and the worker's `fetching` timestamp, both from the build record (same machine clock, 1 ms resolution). No baseline: this is the queue's own floor. Its parts come from the BullMQ job's own timestamps (`timestamp` when queue.add made it, `processedOn` when the worker moved it to active), same clock.",
    ],
  };
}
