/**
 * The worker half of the scale benchmark: real builds through a test-kit stack (API + one
 * worker), failing fast on a missing S3 source, to take a finished build's shape and the
 * worker's resident memory over many builds.
 */
import { isTerminal, type BuildRecord } from "@m1l0/config";
import { BuildStore, createRedis } from "@m1l0/queue";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { obliterate } from "./ingress.js";
import { prefixMemory, readTemplate, deletePrefix, type FinishedTemplate } from "./scale-state.js";
import { freePort, startStack, type Services } from "./stack.js";
import { postBuild, sleep } from "./util.js";

/** Builds before the first RSS reading: modules loaded, code paths compiled, pools filled. */
const WARMUP_BUILDS = 20;
/** Builds submitted at once: the worker always has the next one waiting. */
const BATCH = 25;
/** Quiet time before each RSS reading, so it shows the idle worker rather than one mid-build. */
const SETTLE_MS = 1_000;

/** A build that fails right after pickup (SOURCE_NOT_FOUND): a whole build life in milliseconds. */
export function fastFailingInput(services: Services): Record<string, unknown> {
  return {
    service: "dockerhub",
    repository: "m1l0bench/scale",
    source: `s3://${services.s3Bucket}/does-not-exist.tar.gz`,
    framework: "python",
    pyversion: "3.11",
  };
}

/** The worker's V8 memory as its own /metrics reports it (prom-client default metrics). */
export interface HeapReading {
  usedBytes: number;
  totalBytes: number;
  /** the young generation's reserved size: V8 grows it under allocation pressure, and RSS with it */
  newSpaceBytes: number;
  externalBytes: number;
}

async function readHeap(metricsUrl: string): Promise<HeapReading> {
  const text = await (await fetch(metricsUrl)).text();
  // every series carries the worker's default labels ({worker="…"})
  const value = (name: string, label = "") => Number(new RegExp(`^${name}\\{[^}]*${label}[^}]*\\} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
  return {
    usedBytes: value("m1l0_worker_nodejs_heap_size_used_bytes"),
    totalBytes: value("m1l0_worker_nodejs_heap_size_total_bytes"),
    newSpaceBytes: value("m1l0_worker_nodejs_heap_space_size_total_bytes", 'space="new"'),
    externalBytes: value("m1l0_worker_nodejs_external_memory_bytes"),
  };
}

export interface WorkerScaleResult {
  template: FinishedTemplate;
  builds: number;
  rssBeforeBytes: number;
  rssAfterBytes: number;
  rssPeakBytes: number;
  heapBefore: HeapReading;
  heapAfter: HeapReading;
  /**
   * A second round of as many builds, each end taken right after a full GC (a heap snapshot
   * forces one): live heap and RSS without the garbage V8 had not collected yet.
   */
  collected: { before: HeapReading & { rssBytes: number }; after: HeapReading & { rssBytes: number } };
  outcomes: Map<string, number>;
  /** Redis bytes under the stack's prefix after all real builds, and how many builds that covers */
  realBytes: { keys: number; bytes: number; builds: number };
}

function residentBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/**
 * Heap and RSS right after a full GC of the worker: a heap snapshot (SIGUSR2) collects first,
 * and blocks the worker's event loop while it writes, so /metrics answers only once it is done.
 */
async function collectedReading(pid: number, metricsUrl: string): Promise<HeapReading & { rssBytes: number }> {
  process.kill(pid, "SIGUSR2");
  await sleep(200);
  // on a loaded machine writing the snapshot can outlast fetch's 10 s connect timeout: ask again
  const deadline = Date.now() + 180_000;
  let heap: HeapReading | undefined;
  while (!heap) {
    heap = await readHeap(metricsUrl).catch((error: unknown) => {
      if (Date.now() > deadline) throw error;
      return undefined;
    });
  }
  return { ...heap, rssBytes: residentBytes(pid) };
}

async function waitAllTerminal(store: BuildStore, ids: string[], timeoutMs: number): Promise<BuildRecord[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = await Promise.all(ids.map((id) => store.get(id)));
    if (records.every((record) => record && isTerminal(record.status))) return records as BuildRecord[];
    if (Date.now() > deadline) throw new Error(`${records.filter((record) => !record || !isTerminal(record.status)).length} of ${ids.length} builds did not finish within ${timeoutMs} ms`);
    await sleep(20);
  }
}

export async function runWorkerScale(services: Services, options: { builds: number; keyPrefix: string }, log: (line: string) => void): Promise<WorkerScaleResult> {
  // the worker archives each final record and log: into a folder of its own, removed afterwards
  const artifactsDir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-scale-"));
  const metricsPort = await freePort();
  const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  const diagnosticDir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-scale-heap-"));
  const stack = await startStack({
    worker: true,
    workerConcurrency: 2,
    keyPrefix: options.keyPrefix,
    // SIGUSR2 makes the worker write a heap snapshot, which starts with a full GC
    workers: [{ ARTIFACTS_DIR: artifactsDir, METRICS_PORT: String(metricsPort), NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${diagnosticDir}` }],
  });
  const redis = createRedis(services.redisUrl, "producer");
  const store = new BuildStore(redis, options.keyPrefix);
  const input = fastFailingInput(services);
  const outcomes = new Map<string, number>();
  let sequence = 0;
  const runBatch = async (count: number): Promise<BuildRecord[]> => {
    // each build its own revision: identical requests would attach to the build in flight
    const ids = await Promise.all(Array.from({ length: count }, () => postBuild(stack.apiUrl, { ...input, revision: `scale-${sequence++}` })));
    return waitAllTerminal(store, ids, 120_000);
  };
  try {
    const pid = stack.workers[0]?.pid;
    if (pid === undefined) throw new Error("the worker did not start");
    const [first] = await runBatch(1);
    const template = await readTemplate(store, first!.id);
    for (let done = 1; done < WARMUP_BUILDS; done += BATCH) await runBatch(Math.min(BATCH, WARMUP_BUILDS - done));
    await sleep(SETTLE_MS);
    const rssBeforeBytes = residentBytes(pid);
    const heapBefore = await readHeap(metricsUrl);
    let rssPeakBytes = rssBeforeBytes;
    for (let done = 0; done < options.builds; done += BATCH) {
      for (const record of await runBatch(Math.min(BATCH, options.builds - done))) {
        const code = record.error?.code ?? record.status;
        outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
      }
      rssPeakBytes = Math.max(rssPeakBytes, residentBytes(pid));
      if (done % 200 === 0) log(`scale: worker ${done + BATCH}/${options.builds} builds, RSS ${(residentBytes(pid) / 2 ** 20).toFixed(1)} MiB`);
    }
    await sleep(SETTLE_MS);
    const rssAfterBytes = residentBytes(pid);
    const heapAfter = await readHeap(metricsUrl);
    // the snapshot itself leaves RSS higher, so the collected round comes after the plain one
    const before = await collectedReading(pid, metricsUrl);
    for (let done = 0; done < options.builds; done += BATCH) await runBatch(Math.min(BATCH, options.builds - done));
    await sleep(SETTLE_MS);
    const after = await collectedReading(pid, metricsUrl);
    const memory = await prefixMemory(redis, options.keyPrefix);
    return { template, builds: options.builds, rssBeforeBytes, rssAfterBytes, rssPeakBytes, heapBefore, heapAfter, collected: { before, after }, outcomes, realBytes: { ...memory, builds: WARMUP_BUILDS + 2 * options.builds } };
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${stack.recentLogs()}`, { cause: error });
  } finally {
    await stack.stop();
    await deletePrefix(redis, options.keyPrefix).catch((error: unknown) => log(`scale: clean-up failed: ${String(error)}`));
    await obliterate(services, stack.queueName).catch((error: unknown) => log(`scale: obliterate failed: ${String(error)}`));
    await redis.quit();
    rmSync(artifactsDir, { recursive: true, force: true });
    rmSync(diagnosticDir, { recursive: true, force: true });
  }
}
