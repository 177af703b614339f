import type { BuildRecord } from "@m1l0/config";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { runCliBatch } from "./fleet-cli.js";
import { DAEMON_SOCKETS, checkDaemons, daemonLabel, removeRepositoryImages } from "./daemons.js";
import type { Table } from "./report.js";
import { startStack, type RunningStack, type Services } from "./stack.js";
import { formatMs, formatSummary, summarize } from "./stats.js";
import { apiFetch, createGitFixture, shortId, sleep, waitForTerminal } from "./util.js";

const BUSYBOX = "m1l0-local/busybox:latest";
const TARGET = 2.85;

export interface FleetOptions {
  builds: number;
  sleepSeconds: number;
  /** WORKER_CONCURRENCY of every worker, in both variants */
  concurrency: number;
  /** runs per variant, alternating */
  repetitions: number;
  /** runs per variant of the docker CLI floor (runCliBatch), alternating; 0 skips it */
  cliRepetitions: number;
}

interface Run {
  ms: number;
  perWorker: Map<string, number>;
}

/** POST /builds with an Idempotency-Key, so a submission retried after a network error never makes a second build. */
async function submit(apiUrl: string, config: unknown, key: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await apiFetch(`${apiUrl}/builds`, { method: "POST", headers: { "content-type": "application/json", "idempotency-key": key }, body: JSON.stringify(config) });
      const body = (await response.json()) as { id?: string };
      if ((response.status === 202 || response.status === 200) && body.id) return body.id;
      throw new Error(`POST /builds answered ${response.status}: ${JSON.stringify(body)}`);
    } catch (error) {
      if (attempt >= 3 || (error instanceof Error && error.message.startsWith("POST /builds answered"))) throw error;
      await sleep(500 * attempt);
    }
  }
}

/** Submits every build at once and times until the last one has finished. */
async function runBatch(services: Services, stack: RunningStack, options: FleetOptions, emptyDir: string): Promise<Run> {
  const salt = shortId();
  const repository = `m1l0bench/fleet-${salt}`;
  // unique content per build: nothing can come from cache, each one waits the full sleep
  const fixtures = Array.from({ length: options.builds }, (_, index) =>
    createGitFixture(emptyDir, { Dockerfile: `FROM ${BUSYBOX}\nRUN echo ${salt}-${index} && sleep ${options.sleepSeconds}\n` }),
  );
  try {
    const started = performance.now();
    const ids: string[] = [];
    // one after another (a few ms each): 30 simultaneous connections to an API on a loaded 2-core machine can time out
    for (const [index, fixture] of fixtures.entries()) {
      ids.push(await submit(stack.apiUrl, { service: "dockerhub", repository, revision: `b${index}`, source: fixture.url, dockerfile: "Dockerfile" }, `${salt}-${index}`));
    }
    const records: BuildRecord[] = await Promise.all(ids.map((id) => waitForTerminal(stack.apiUrl, id, { pollMs: 50, timeoutMs: 20 * 60_000 })));
    const ms = performance.now() - started;
    const failed = records.filter((record) => record.status !== "succeeded");
    if (failed.length) throw new Error(`${failed.length} fleet builds did not succeed, e.g. ${JSON.stringify(failed[0]?.error)}`);
    const perWorker = new Map<string, number>();
    for (const record of records) perWorker.set(record.worker ?? "?", (perWorker.get(record.worker ?? "?") ?? 0) + 1);
    return { ms, perWorker };
  } finally {
    for (const fixture of fixtures) fixture.cleanup();
    for (const socket of DAEMON_SOCKETS) await removeRepositoryImages(socket, `${services.registryHost}/${repository}`);
  }
}

function cliFloorRows(cliRuns: Record<"one" | "three", number[]>, ours: number): string[][] {
  if (cliRuns.one.length === 0 || cliRuns.three.length === 0) return [];
  const one = summarize(cliRuns.one);
  const three = summarize(cliRuns.three);
  const cliSpeedup = one.median / three.median;
  return [
    ["floor: the docker CLI alone, same builds (3 daemons vs 1)", formatSummary(three, formatMs), formatSummary(one, formatMs), `${cliSpeedup.toFixed(2)}×`, "", ""],
    ["  ours ÷ the CLI's speed-up", "", "", `${(ours / cliSpeedup).toFixed(2)}`, "(informative)", ""],
  ];
}

export async function runFleet(services: Services, options: FleetOptions, log: (line: string) => void): Promise<Table> {
  await checkDaemons(DAEMON_SOCKETS, [BUSYBOX]);
  const emptyDir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-fleet-"));
  const workerEnv = (socket: string) => ({ DOCKER_SOCKET: socket, WORKER_ID: `bench-fleet-${daemonLabel(socket)}` });
  const stacks: RunningStack[] = [];
  const runs: Record<"one" | "three", Run[]> = { one: [], three: [] };
  const cliRuns: Record<"one" | "three", number[]> = { one: [], three: [] };
  try {
    const one = await startStack({ worker: true, workerConcurrency: options.concurrency, workers: [workerEnv(DAEMON_SOCKETS[0])] });
    stacks.push(one);
    const three = await startStack({ worker: true, workerConcurrency: options.concurrency, workers: DAEMON_SOCKETS.map(workerEnv) });
    stacks.push(three);
    for (let rep = 0; rep < options.repetitions; rep++) {
      const order = rep % 2 === 0 ? (["one", "three"] as const) : (["three", "one"] as const);
      for (const variant of order) {
        const result = await runBatch(services, variant === "one" ? one : three, options, emptyDir);
        runs[variant].push(result);
        log(`fleet rep ${rep + 1}/${options.repetitions} ${variant === "one" ? "1 worker" : "3 workers"}: ${formatMs(result.ms)} (${[...result.perWorker].map(([worker, count]) => `${worker}: ${count}`).join(", ")})`);
      }
    }
    const cliOptions = { builds: options.builds, sleepSeconds: options.sleepSeconds, concurrency: options.concurrency, baseImage: BUSYBOX };
    for (let rep = 0; rep < options.cliRepetitions; rep++) {
      for (const variant of rep % 2 === 0 ? (["one", "three"] as const) : (["three", "one"] as const)) {
        const ms = await runCliBatch(services, variant === "one" ? [DAEMON_SOCKETS[0]] : DAEMON_SOCKETS, cliOptions, emptyDir);
        cliRuns[variant].push(ms);
        log(`fleet CLI floor rep ${rep + 1}/${options.cliRepetitions} ${variant === "one" ? "1 daemon" : "3 daemons"}: ${formatMs(ms)}`);
      }
    }
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${stacks.map((stack) => stack.recentLogs()).join("\n")}`, { cause: error });
  } finally {
    await Promise.all(stacks.map((stack) => stack.stop()));
    rmSync(emptyDir, { recursive: true, force: true });
  }
  const oneWorker = summarize(runs.one.map((run) => run.ms));
  const threeWorkers = summarize(runs.three.map((run) => run.ms));
  const speedup = oneWorker.median / threeWorkers.median;
  const waves = (slots: number) => Math.ceil(options.builds / slots);
  const distribution = runs.three.map((run) => [...run.perWorker.values()].sort((a, b) => b - a).join("/")).join(", ");
  return {
    title: `7. Fleet scaling — ${options.builds} waiting builds, 1 worker vs 3 workers with separate daemons`,
    columns: ["metric", "ours: 3 workers, 3 daemons", "baseline: 1 worker, 1 daemon", "speed-up (baseline ÷ ours)", "target", "met?"],
    rows: [
      ["wall time, submit all → last succeeded", formatSummary(threeWorkers, formatMs), formatSummary(oneWorker, formatMs), `${speedup.toFixed(2)}×`, `≥ ${TARGET}× faster`, speedup >= TARGET ? "yes" : "no"],
      [
        "floor: waves × sleep",
        `${waves(3 * options.concurrency)} × ${options.sleepSeconds} s = ${waves(3 * options.concurrency) * options.sleepSeconds} s`,
        `${waves(options.concurrency)} × ${options.sleepSeconds} s = ${waves(options.concurrency) * options.sleepSeconds} s`,
        `${(waves(options.concurrency) / waves(3 * options.concurrency)).toFixed(2)}×`,
        "",
        "",
      ],
      ...cliFloorRows(cliRuns, speedup),
      ["builds per worker (3-worker runs)", distribution, "", "", "", ""],
    ],
    notes: [
      `Each build: a custom Dockerfile \`FROM ${BUSYBOX}\` + \`RUN echo <unique> && sleep ${options.sleepSeconds}\` from its own git fixture (unique content, so nothing is cached), built with network none and pushed to the local registry. All ${options.builds} are submitted at once through POST /builds; the time runs until the last record is \`succeeded\` (polled every 50 ms).`,
      `WORKER_CONCURRENCY=${options.concurrency} for every worker in both variants: 1 worker on /var/run/docker.sock (${options.concurrency} builds at a time) vs 3 workers on /var/run/docker.sock, docker-w2.sock and docker-w3.sock (${3 * options.concurrency} at a time), each variant with its own API and queue. Variants alternate, ${options.repetitions} runs each; the images are removed from every daemon after each run.`,
      `The docker CLI floor: the same ${options.builds} builds (own fixtures, unique content) done by \`git clone --depth 1\`, \`docker build\` (classic builder, network none) and \`docker push\` alone, ${options.concurrency} at a time per daemon, on 1 daemon and on 3 (${options.cliRepetitions} run(s) each, alternating, after the service's runs): the speed-up this machine's cores allow the same work without our service.`,
      "The waves row is the sleeping alone; the rest of each build (clone, context, container start, commit, push) runs in parallel too but competes for this machine's cores, which is what keeps the speed-up under the 3× of the floor.",
    ],
  };
}
