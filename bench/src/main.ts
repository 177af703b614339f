#!/usr/bin/env node
/**
 * Benchmark runner: `node bench/dist/main.js [--quick] [--only overhead,codechange,packing,ingress,pickup,fleet,clone,scale,pytorch] [--output FILE]`.
 * Runs each benchmark against the real local stack (scripts/services.sh), alternating the
 * compared variants, and writes BENCHMARKS.md (full runs) or prints the tables (--quick).
 */
import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { runClone, type CloneOptions } from "./clone.js";
import { FULL_REPO, QUICK_REPO } from "./clone-repo.js";
import { runCodeChange, type CodeChangeOptions } from "./codechange.js";
import { loadServices } from "./env.js";
import { runFleet, type FleetOptions } from "./fleet.js";
import { runIngress, type IngressOptions } from "./ingress.js";
import { runOverhead, type OverheadOptions } from "./overhead.js";
import { FULL_TREE, QUICK_TREE, runPacking, type TreeSpec } from "./packing.js";
import { runPickup, type PickupOptions } from "./pickup.js";
import { runPytorch, type PytorchOptions } from "./pytorch.js";
import { describeMachine, renderReport, renderTable, renderTargets, type Table } from "./report.js";
import { runScale, type ScaleOptions } from "./scale.js";
import { ROOT_DIR } from "./stack.js";

const BENCHMARKS = ["overhead", "codechange", "packing", "ingress", "pickup", "fleet", "clone", "scale", "pytorch"] as const;
type Benchmark = (typeof BENCHMARKS)[number];

interface Plan {
  overhead: OverheadOptions;
  packing: { spec: TreeSpec; repetitions: number };
  ingress: IngressOptions;
  pickup: PickupOptions;
  codechange: CodeChangeOptions;
  fleet: FleetOptions;
  clone: CloneOptions;
  scale: ScaleOptions;
  pytorch: PytorchOptions;
}

const FULL: Plan = {
  overhead: { repetitions: 5, warmup: true },
  packing: { spec: FULL_TREE, repetitions: 5 },
  ingress: { closedRepetitions: 3, closedDurationMs: 8_000, openRepetitions: 2, openDurationMs: 10_000, concurrency: 16, ratePerSecond: 500, profile: true },
  pickup: { builds: 100, waiting: 10_000 },
  // ~10 s of pip build work per cold build on this machine's cores, a 32 MiB dependency layer
  codechange: { pairs: 4, dependency: { iterations: 6_000_000, dataBytes: 32 * 1024 * 1024 } },
  fleet: { builds: 30, sleepSeconds: 4, concurrency: 2, repetitions: 2, cliRepetitions: 1 },
  clone: { spec: FULL_REPO, repetitions: 3, profile: true },
  scale: { finished: [1_000, 10_000], queued: [0, 1_000, 10_000], ratePerSecond: 500, loadDurationMs: 5_000, repetitions: 2, historyRecords: 100_000, historyRequests: 50, workerBuilds: 1_000 },
  pytorch: { cold: { repetitions: 3, warmup: false, resubmits: 0 }, codeOnlyPairs: 2 },
};

/** CI smoke test: every code path once, in about a minute; figures are indicative only. */
const QUICK: Plan = {
  overhead: { repetitions: 1, warmup: false },
  packing: { spec: QUICK_TREE, repetitions: 2 },
  ingress: { closedRepetitions: 1, closedDurationMs: 2_000, openRepetitions: 1, openDurationMs: 2_000, concurrency: 16, ratePerSecond: 500, profile: false },
  pickup: { builds: 10, waiting: 500 },
  codechange: { pairs: 1, dependency: { iterations: 50_000, dataBytes: 256 * 1024 } },
  fleet: { builds: 6, sleepSeconds: 1, concurrency: 1, repetitions: 1, cliRepetitions: 1 },
  clone: { spec: QUICK_REPO, repetitions: 1, profile: false },
  scale: { finished: [100, 500], queued: [0, 500], ratePerSecond: 500, loadDurationMs: 1_000, repetitions: 1, historyRecords: 2_000, historyRequests: 10, workerBuilds: 50 },
  pytorch: { cold: { repetitions: 1, warmup: false, resubmits: 0 }, codeOnlyPairs: 1 },
};

function notMeasured(title: string, target: string, reason: string, notes: string[] = []): Table {
  return {
    title,
    columns: ["metric", "ours", "baseline", "ratio", "target", "met?"],
    rows: [["–", `not measured: ${reason}`, "–", "–", target, "–"]],
    notes,
  };
}

function failedTable(title: string, error: unknown): Table {
  const message = error instanceof Error ? error.message : String(error);
  return { title, columns: ["result"], rows: [[`FAILED: ${message.split("\n")[0] ?? ""}`]], notes: message.split("\n").slice(1, 15).filter(Boolean) };
}

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    output: { type: "string" },
  },
});
const selected = new Set<Benchmark>(
  values.only
    ? values.only.split(",").map((name) => {
        const trimmed = name.trim();
        if (!(BENCHMARKS as readonly string[]).includes(trimmed)) throw new Error(`unknown benchmark "${trimmed}"; choose from ${BENCHMARKS.join(", ")}`);
        return trimmed as Benchmark;
      })
    : BENCHMARKS,
);
const quick = values.quick ?? false;
const plan = quick ? QUICK : FULL;
const output = values.output ?? (quick ? undefined : path.join(ROOT_DIR, "BENCHMARKS.md"));
const command = ["node bench/dist/main.js", ...process.argv.slice(2)].join(" ");
const services = loadServices();
const log = (line: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

const startedAt = new Date();
const machineBefore = describeMachine();
const tables = new Map<string, Table>();
let failures = 0;

async function attempt(key: string, title: string, run: () => Promise<void>): Promise<void> {
  log(`running ${key}`);
  try {
    await run();
  } catch (error) {
    failures++;
    log(`${key} failed: ${error instanceof Error ? error.message : String(error)}`);
    tables.set(key, failedTable(title, error));
  }
}

// Short, independent benchmarks first; the long build comparison last.
if (selected.has("pickup")) {
  await attempt("6", "6. Pickup latency", async () => void tables.set("6", await runPickup(services, plan.pickup, log)));
}
if (selected.has("ingress")) {
  await attempt("5", "5. Ingress", async () => void tables.set("5", await runIngress(services, plan.ingress, log)));
}
if (selected.has("packing")) {
  await attempt("4", "4. Context packing", async () => void tables.set("4", await runPacking(services, plan.packing, log)));
}
if (selected.has("clone")) {
  await attempt("8", "8. Clone at real size", async () => void tables.set("8", await runClone(services, plan.clone, log)));
}
if (selected.has("overhead")) {
  await attempt("1", "1. Overhead", async () => {
    const result = await runOverhead(services, plan.overhead, log);
    tables.set("1", result.overhead);
    tables.set("2", result.unchanged);
  });
  if (!tables.has("2")) {
    tables.set("2", notMeasured("2. Unchanged resubmit", "≥ 10× faster than Docker, < 250 ms", "the overhead benchmark (which also measures this) failed"));
  }
}
if (selected.has("codechange")) {
  await attempt("3", "3. Code-only change", async () => void tables.set("3", await runCodeChange(services, plan.codechange, log)));
}
if (selected.has("scale")) {
  await attempt("9", "9. Scale of state", async () => void tables.set("9", await runScale(services, plan.scale, log)));
}
if (selected.has("fleet")) {
  await attempt("7", "7. Fleet scaling", async () => void tables.set("7", await runFleet(services, plan.fleet, log)));
}
if (selected.has("pytorch")) {
  await attempt("10", "10. A framework-sized image", async () => void tables.set("10", await runPytorch(services, plan.pytorch, log)));
}

const ordered = [...tables.entries()].sort(([left], [right]) => Number(left) - Number(right)).map(([, table]) => table);
const sections = [renderTargets(ordered), ...ordered.map((table) => renderTable(table))];
const report = renderReport({
  command,
  startedAt,
  finishedAt: new Date(),
  machineBefore,
  loadAfter: os.loadavg().map((value) => value.toFixed(2)).join(" / "),
  quick,
  setup: [
    "services: one Docker daemon (/var/run/docker.sock) for benchmarks 1, 2, 4–6; benchmarks 3 and 10 also use /var/run/docker-w2.sock and benchmark 7 docker-w2 and docker-w3 (scripts/fleet.sh), all on this machine; Redis, the registry (127.0.0.1:5000), S3 (s3rver) and the git server local too",
  ],
  sections: [
    ...sections,
    "## Noise",
    "",
    `This machine has ${machineBefore.cores} cores shared by the Docker daemon, Redis, the registry, the API, the worker, the load generator and whatever else runs at the time (other engineers' test suites during development runs), so single figures can move by tens of percent between runs; the min–max spread in each row shows how much they moved within this run.`,
    "",
  ],
});
process.stdout.write(report);
if (output) {
  writeFileSync(output, report);
  log(`wrote ${output}`);
}
process.exit(failures > 0 ? 1 : 0);
