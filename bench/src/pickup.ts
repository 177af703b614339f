import type { Table } from "./report.js";
import { startStack, type Services } from "./stack.js";
import { formatMs, formatSummary, quantile, summarize } from "./stats.js";
import { between, postBuild, sleep, waitForTerminal } from "./util.js";

const WARMUP_BUILDS = 2;
/** Lets the worker go back to waiting for jobs, so every pickup starts from an idle worker. */
const IDLE_PAUSE_MS = 100;

export async function runPickup(services: Services, options: { builds: number }, log: (line: string) => void): Promise<Table> {
  const stack = await startStack({ worker: true, workerConcurrency: 1 });
  // Fails right after pickup (SOURCE_NOT_FOUND): the queued → fetching gap is all that is measured.
  const input = {
    service: "dockerhub",
    repository: "m1l0bench/pickup",
    source: `s3://${services.s3Bucket}/does-not-exist.tar.gz`,
    framework: "python",
    pyversion: "3.11",
  };
  const pickups: number[] = [];
  const roundTrips: number[] = [];
  const codes = new Map<string, number>();
  try {
    for (let index = 0; index < WARMUP_BUILDS + options.builds; index++) {
      await sleep(IDLE_PAUSE_MS);
      const started = performance.now();
      const id = await postBuild(stack.apiUrl, input);
      const record = await waitForTerminal(stack.apiUrl, id, { pollMs: 5, timeoutMs: 60_000 });
      if (index < WARMUP_BUILDS) continue;
      roundTrips.push(performance.now() - started);
      const code = record.error?.code ?? record.status;
      codes.set(code, (codes.get(code) ?? 0) + 1);
      const pickup = between(record, "queued", "fetching");
      if (pickup === undefined) throw new Error(`build ${id} has no queued/fetching timestamps: ${JSON.stringify(record.timestamps)}`);
      pickups.push(pickup);
    }
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${stack.recentLogs()}`, { cause: error });
  } finally {
    await stack.stop();
  }
  const p99 = quantile(pickups, 0.99);
  log(`pickup: p50 ${formatMs(quantile(pickups, 0.5))}, p99 ${formatMs(p99)} over ${pickups.length}`);
  return {
    title: "6. Pickup latency — enqueue to worker start, idle worker",
    columns: ["metric", "ours", "baseline", "ratio", "target", "met?"],
    rows: [
      ["pickup p50 (queued → fetching)", formatMs(quantile(pickups, 0.5)), "–", "–", "", ""],
      ["pickup p99 (queued → fetching)", formatMs(p99), "–", "–", "≤ 50 ms", p99 <= 50 ? "yes" : "no"],
      ["pickup, all", formatSummary(summarize(pickups), formatMs), "", "", "", ""],
      ["POST → failed seen by the client", formatSummary(summarize(roundTrips), formatMs), "", "", "(informative)", ""],
    ],
    notes: [
      `${options.builds} builds submitted one at a time through POST /builds to one idle worker (concurrency 1), ${IDLE_PAUSE_MS} ms apart, after ${WARMUP_BUILDS} uncounted warm-up builds. Each uses source s3://${services.s3Bucket}/does-not-exist.tar.gz and fails right after pickup (outcomes: ${[...codes].map(([code, count]) => `${code} × ${count}`).join(", ")}).`,
      "Pickup is the gap between the API's `queued` timestamp (set before the record is written and the job added) and the worker's `fetching` timestamp, both from the build record (same machine clock, 1 ms resolution). No baseline: this is the queue's own floor.",
    ],
  };
}
