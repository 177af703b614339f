import type { BuildRecord } from "@m1l0/config";
import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { DAEMON_SOCKETS, bridgeGateway, checkDaemons, daemonLabel, removeRepositoryImages, timedPull, type TimedPull } from "./daemons.js";
import { startPackageIndex, type DependencySpec } from "./deps-index.js";
import type { Table } from "./report.js";
import { ROOT_DIR, startStack, type RunningStack, type Services } from "./stack.js";
import { formatBytes, formatMs, formatRatio, formatSummary, ratio, summarize } from "./stats.js";
import { buildSteps, stepRows, type StepTimes } from "./steps.js";
import { apiFetch, between, createGitFixture, forgetNamespace, postBuild, shortId, waitForTerminal } from "./util.js";

const BASE_IMAGE = "m1l0-local/python:3.11-bookworm";
const POLL_MS = 20;
const BUILD_TIMEOUT_MS = 10 * 60_000;
const TARGET = 0.15;

export interface CodeChangeOptions {
  /** pairs (cold build on one daemon, code-only rebuild on the other), alternating direction */
  pairs: number;
  dependency: DependencySpec;
}

export interface Pair {
  coldDaemon: string;
  warmDaemon: string;
  coldMs: number;
  warmMs: number;
  /** the cold build's pip step, from the log's timestamps */
  pipStepMs: number | undefined;
  /** the rebuild's pull of the cache image, as the worker logged it */
  pullMs: number | undefined;
  /** the same pull alone afterwards, on the rebuild's daemon once it holds nothing of the repository again: the daemon's floor */
  pullFloor: TimedPull | undefined;
  /** both builds step by step, from their log's line timestamps */
  coldSteps: StepTimes | undefined;
  warmSteps: StepTimes | undefined;
  /** recorded status timestamps of both builds */
  coldPhases: Record<string, number | undefined>;
  warmPhases: Record<string, number | undefined>;
}

const phasesOf = (record: BuildRecord): Record<string, number | undefined> => ({
  "queued → fetching (pickup)": between(record, "queued", "fetching"),
  "fetching → building (clone, filter, Dockerfile)": between(record, "fetching", "building"),
  "building → pushing (rest of the cache pull, context, docker build, import check)": between(record, "building", "pushing"),
  "pushing → succeeded (push)": between(record, "pushing", "succeeded"),
});

const MAIN_PY = (version: string) => `import m1l0_bench_deps\n\nprint("bench project ${version}", m1l0_bench_deps.CHAIN[:12])\n`;

export interface Built {
  ms: number;
  record: BuildRecord;
  log: string;
}

/** What the code-only benchmark builds: two versions of a project that differ only in code. */
export interface CodeOnlyProject {
  /** must be the same image on both daemons (scripts/fleet.sh copies the bases) */
  baseImage: string;
  /** a fresh project per pair: its files for v1 and v2 (edits over `sourceDir`) and its build config, without source and revision */
  versions(salt: string): { sourceDir: string; v1: Record<string, string>; v2: Record<string, string>; config: Record<string, unknown> };
  /** allowlisted in BUILD_EGRESS_ALLOW, e.g. a package index */
  egressAllow?: string;
  /** throws unless the cold build did its work and the rebuild reused what it should */
  check(cold: Built, warm: Built): void;
}

async function build(stack: RunningStack, config: Record<string, unknown>): Promise<Built> {
  const started = performance.now();
  const id = await postBuild(stack.apiUrl, config);
  const record = await waitForTerminal(stack.apiUrl, id, { pollMs: POLL_MS, timeoutMs: BUILD_TIMEOUT_MS });
  const ms = performance.now() - started;
  const log = await (await apiFetch(`${stack.apiUrl}/builds/${id}/logs`)).text();
  if (record.status !== "succeeded") throw new Error(`build ${id} ended ${record.status}: ${JSON.stringify(record.error)}\n${log.slice(-1500)}`);
  return { ms, record, log };
}

const PIP_STEP = /\[build\] Step \d+\/\d+ : RUN python3 -m pip install -r requirements.txt/;
/** the same step as `stepTimes` names it */
const PIP_STEP_NAME = /^Step \d+\/\d+ RUN python3 -m pip install -r/;

/** The classic builder's verdict on the pip step: "Using cache" (reused) or "Running in" (ran). */
function pipStepCached(log: string): boolean | undefined {
  const lines = log.split("\n");
  const start = lines.findIndex((line) => PIP_STEP.test(line));
  const verdict = lines.slice(start + 1).find((line) => /---> (Using cache|Running in)/.test(line));
  return start < 0 || !verdict ? undefined : verdict.includes("Using cache");
}

export async function runCodeChange(services: Services, options: CodeChangeOptions, log: (line: string) => void): Promise<Table> {
  const dir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-codechange-"));
  const gateway = await bridgeGateway();
  const index = await startPackageIndex(path.join(dir, "index"), gateway, options.dependency);
  // the project's files all come from the fixtures' edits
  const empty = mkdtempSync(path.join(dir, "empty-"));
  const project: CodeOnlyProject = {
    baseImage: BASE_IMAGE,
    egressAllow: new URL(index.url).host,
    versions(salt) {
      // a unique comment: no daemon holds a layer of this requirements.txt, so the first build is cold
      const requirements = `# bench code-only change ${salt}\n${index.requirements}`;
      return {
        sourceDir: empty,
        v1: { "main.py": MAIN_PY("v1"), "requirements.txt": requirements },
        v2: { "main.py": MAIN_PY("v2"), "requirements.txt": requirements },
        config: { service: "dockerhub", repository: `m1l0bench/code-${salt}`, framework: "python", pyversion: "3.11", resource: "cpu", entry: "main.py" },
      };
    },
    check(cold, warm) {
      if (pipStepCached(cold.log) !== false) throw new Error(`the cold build's pip step did not run:\n${cold.log.slice(-1500)}`);
      if (!warm.log.includes(`cache from ${cold.record.image?.reference}`) || pipStepCached(warm.log) !== true) {
        throw new Error(`the code-only rebuild did not reuse the pip layer:\n${warm.log.slice(-2500)}`);
      }
    },
  };
  try {
    const pairs = await measureCodeOnly(services, project, options.pairs, log);
    return codeChangeTable(pairs, options, DAEMON_SOCKETS[0], DAEMON_SOCKETS[1], index.sdistBytes, gateway);
  } finally {
    await index.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Pairs of a cold build on one daemon and the code-only rebuild on the other (alternating direction), each through its own stack sharing one Redis namespace. */
export async function measureCodeOnly(services: Services, project: CodeOnlyProject, pairCount: number, log: (line: string) => void): Promise<Pair[]> {
  const [daemonX, daemonY] = [DAEMON_SOCKETS[0], DAEMON_SOCKETS[1]];
  await checkDaemons([daemonX, daemonY], [project.baseImage]);
  // both stacks share a Redis namespace, so either worker finds the other's last pushed image
  const keyPrefix = `bench-${shortId()}:`;
  // the production default (BUILD_EGRESS=public on the worker's own build network), with the project's own allowlist
  const buildNetwork = `m1l0-bench-${shortId()}`;
  const workerEnv = (socket: string) => ({
    DOCKER_SOCKET: socket,
    WORKER_ID: `bench-${daemonLabel(socket)}`,
    BUILD_NETWORK: buildNetwork,
    BUILD_EGRESS: "public",
    ...(project.egressAllow ? { BUILD_EGRESS_ALLOW: project.egressAllow } : {}),
  });
  const stacks = new Map<string, RunningStack>();
  const pairs: Pair[] = [];
  try {
    for (const socket of [daemonX, daemonY]) {
      stacks.set(socket, await startStack({ worker: true, workerConcurrency: 1, keyPrefix, workers: [workerEnv(socket)] }));
    }
    for (let pair = 0; pair < pairCount; pair++) {
      const [coldDaemon, warmDaemon] = pair % 2 === 0 ? [daemonX, daemonY] : [daemonY, daemonX];
      const { sourceDir, v1, v2, config } = project.versions(shortId());
      const fixtures = [createGitFixture(sourceDir, v1), createGitFixture(sourceDir, v2)] as const;
      try {
        const cold = await build(stacks.get(coldDaemon)!, { ...config, revision: "v1", source: fixtures[0].url });
        const warm = await build(stacks.get(warmDaemon)!, { ...config, revision: "v2", source: fixtures[1].url });
        project.check(cold, warm);
        const pulled = /pulled \S+ for its layers in ([\d.]+) s/.exec(warm.log);
        const repository = `${services.registryHost}/${String(config.repository)}`;
        await removeRepositoryImages(warmDaemon, repository);
        const auth = { username: services.registryUsername, password: services.registryPassword, serveraddress: services.registryHost };
        const pullFloor = cold.record.image ? await timedPull(warmDaemon, cold.record.image.reference, auth) : undefined;
        const coldSteps = buildSteps(cold.record, cold.log);
        const sample: Pair = {
          coldDaemon,
          warmDaemon,
          coldMs: cold.ms,
          warmMs: warm.ms,
          pipStepMs: coldSteps?.find((step) => PIP_STEP_NAME.test(step.name))?.ms,
          pullMs: pulled ? Number(pulled[1]) * 1000 : undefined,
          pullFloor,
          coldSteps,
          warmSteps: buildSteps(warm.record, warm.log),
          coldPhases: phasesOf(cold.record),
          warmPhases: phasesOf(warm.record),
        };
        pairs.push(sample);
        log(`codechange pair ${pair + 1}/${pairCount}: cold on ${daemonLabel(coldDaemon)} ${formatMs(sample.coldMs)} (pip ${sample.pipStepMs === undefined ? "?" : formatMs(sample.pipStepMs)}), code-only on ${daemonLabel(warmDaemon)} ${formatMs(sample.warmMs)} (pull ${sample.pullMs === undefined ? "none" : formatMs(sample.pullMs)})`);
      } finally {
        for (const fixture of fixtures) fixture.cleanup();
        for (const socket of [daemonX, daemonY]) await removeRepositoryImages(socket, `${services.registryHost}/${String(config.repository)}`);
      }
    }
  } catch (error) {
    const logs = [...stacks.values()].map((stack) => stack.recentLogs()).join("\n");
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n${logs}`, { cause: error });
  } finally {
    await Promise.all([...stacks.values()].map((stack) => stack.stop()));
    for (const socket of [daemonX, daemonY]) await removeBuildNetwork(socket, buildNetwork).catch((error: Error) => log(`codechange: cannot remove build network ${buildNetwork}: ${error.message}`));
    await forgetNamespace(services, keyPrefix).catch((error: Error) => log(`codechange: cannot delete the ${keyPrefix}* keys: ${error.message}`));
  }
  return pairs;
}

/** The workers' build network and its egress rules, removed the documented way (`egress remove`, then `docker network rm`). */
async function removeBuildNetwork(socket: string, network: string): Promise<void> {
  execFileSync(process.execPath, [path.join(ROOT_DIR, "apps/worker/dist/main.js"), "egress", "remove"], { env: { PATH: process.env.PATH, DOCKER_SOCKET: socket, BUILD_NETWORK: network, LOG_LEVEL: "silent" }, stdio: "ignore" });
  await new Docker({ socketPath: socket }).getNetwork(network).remove().catch(() => undefined);
}

function codeChangeTable(pairs: Pair[], options: CodeChangeOptions, daemonX: string, daemonY: string, sdistBytes: number, gateway: string): Table {
  const cold = summarize(pairs.map((pair) => pair.coldMs));
  const warm = summarize(pairs.map((pair) => pair.warmMs));
  const overall = ratio(warm.median, cold.median);
  const rows: string[][] = [
    [
      "wall time, all pairs",
      formatSummary(warm, formatMs),
      formatSummary(cold, formatMs),
      formatRatio(overall),
      `≤ ${TARGET}× cold`,
      overall === undefined ? "–" : overall <= TARGET ? "yes" : "no",
    ],
  ];
  for (const daemon of [daemonX, daemonY]) {
    const coldHere = pairs.filter((pair) => pair.coldDaemon === daemon).map((pair) => pair.coldMs);
    const warmHere = pairs.filter((pair) => pair.warmDaemon === daemon).map((pair) => pair.warmMs);
    if (coldHere.length === 0 || warmHere.length === 0) continue;
    const here = ratio(summarize(warmHere).median, summarize(coldHere).median);
    rows.push([`  landing on ${daemonLabel(daemon)} (vs cold on ${daemonLabel(daemon)})`, formatSummary(summarize(warmHere), formatMs), formatSummary(summarize(coldHere), formatMs), formatRatio(here), "", ""]);
  }
  const pips = pairs.map((pair) => pair.pipStepMs).filter((value): value is number => value !== undefined);
  const pulls = pairs.map((pair) => pair.pullMs).filter((value): value is number => value !== undefined);
  rows.push(["by recorded status timestamps:", "", "", "", "", ""]);
  for (const name of Object.keys(pairs[0]?.warmPhases ?? {})) {
    const values = (pick: (pair: Pair) => number | undefined) => {
      const found = pairs.map(pick).filter((value): value is number => value !== undefined);
      return found.length ? formatSummary(summarize(found), formatMs) : "–";
    };
    rows.push([`  ${name}`, values((pair) => pair.warmPhases[name]), values((pair) => pair.coldPhases[name]), "", "", ""]);
  }
  if (pips.length) rows.push(["  the cold build's pip step (log timestamps)", "", formatSummary(summarize(pips), formatMs), "", "", ""]);
  if (pulls.length) rows.push(["  the rebuild's pull of the cache image (worker log)", formatSummary(summarize(pulls), formatMs), "", "", "", ""]);
  rows.push(...pullFloorRows(pairs), ...rebuildStepRows(pairs));
  return {
    title: "3. Code-only change — dependency layer reused on another daemon",
    columns: ["metric", "ours: code-only rebuild on the other daemon (POST /builds → succeeded)", "baseline: cold build + push on a daemon (same service)", "ratio", "target", "met?"],
    rows,
    notes: [
      `Each pair: a fresh repository; a cold build of v1 on one daemon, then v2 (only main.py changed, requirements.txt identical) submitted to a stack whose only worker drives the other daemon, which holds nothing of the repository. Directions alternate (pair 1: ${daemonLabel(daemonX)} → ${daemonLabel(daemonY)}, pair 2: back), ${pairs.length} pairs; the images of both daemons are removed after each pair. Both stacks share one Redis namespace, where a worker records the last image it pushed per repository.`,
      "The rebuild's worker looks that image up, pulls it from the registry with its own credentials (only the layers its daemon lacks: the base is shared), logs `cache from <ref>` and passes it to the classic builder as `cachefrom`; the builder reports `Using cache` for every step up to the pip install, and runs `COPY . ./` and later steps. Checked on every pair: the benchmark fails if the cold build's pip step did not run or the rebuild's was not a cache hit.",
      `The dependency is realistic in cost and offline: requirements.txt names a local package index (\`--index-url http://${gateway}:<port>/simple/\`, \`--trusted-host\`; a Node HTTP server of the benchmark on the default daemon's bridge address, reachable from build containers of every daemon) serving one source distribution, ${PACKAGE_SUMMARY(options.dependency, sdistBytes)} pip downloads it, builds the wheel (PEP 517, build isolation) and installs it, under the worker's default egress policy (\`BUILD_EGRESS=public\` on its own build network, the index's address and port in \`BUILD_EGRESS_ALLOW\`).`,
      "Where the rebuild's time goes (see the rows by status timestamps): the clone and, at the same time, the pull of the cache image (the dependency layer's bytes, downloaded and unpacked; the worker starts it with the fetch), the cached steps (milliseconds, the ENTRYPOINT among them: the generated Dockerfile sets it before the code), then `COPY . ./` and the LABEL step (per-build values), each of which the classic builder commits through a container, with the import check running on the `COPY . ./` step's image meanwhile, and a push of only the new layers. That is the floor of a code-only rebuild on a daemon that has never seen the project; the bigger the dependency step relative to its layer, the lower the ratio.",
      "Floor of the pull: after each pair, with the rebuild's daemon emptied of the repository again, the runner pulls the cold build's image there alone (the daemon's API, as the worker pulls; no clone or build alongside) and counts the layers it downloaded; the difference from the worker's pull is what the clone running alongside costs it on 2 cores.",
      "Step by step: both builds' classic-builder lines, stamped by the worker as it reads them; a step lasts from its `Step N/M` line to the next one (the last to `Successfully built`), medians over the pairs; the rebuild's \"before Step 1\" holds the rest of its cache pull, since the build waits for that image before it starts.",
      "Ratio: median rebuild time ÷ median cold time; per daemon, the rebuilds landing on a daemon against the cold builds made on that daemon. Both figures include submission, clone, context streaming, build and push; the rebuild also includes the pull of the cache image.",
    ],
  };
}

function pullFloorRows(pairs: Pair[]): string[][] {
  const floors = pairs.flatMap((pair) => (pair.pullFloor ? [pair.pullFloor] : []));
  if (floors.length === 0) return [];
  const layers = [...new Set(floors.map((floor) => `${floor.downloaded} downloaded, ${floor.present} already there`))].join("; ");
  return [["  floor: the same pull alone afterwards (daemon API, layers: " + layers + ")", formatSummary(summarize(floors.map((floor) => floor.ms)), formatMs), "", "", "", ""]];
}

/** The rebuild against its cold build, step by step (the ratio column holds rebuild − cold). */
function rebuildStepRows(pairs: Pair[]): string[][] {
  const rows = stepRows(
    pairs.flatMap((pair) => (pair.warmSteps ? [pair.warmSteps] : [])),
    pairs.flatMap((pair) => (pair.coldSteps ? [pair.coldSteps] : [])),
    {
      before: "from `building`: the egress check, the daemon reading the context and, for the rebuild, the rest of its cache pull",
      after: "to `pushing`: tag, the import check's wait",
    },
  );
  if (rows.length === 0) return [];
  return [["step by step, from the build log's line timestamps (ratio column: rebuild − cold):", "", "", "", "", ""], ...rows.map((row) => [...row, "", ""])];
}

const PACKAGE_SUMMARY = (spec: DependencySpec, sdistBytes: number) =>
  `m1l0-bench-deps 1.0 (${formatBytes(sdistBytes)} sdist) whose in-tree build backend computes a SHA-256 hash chain of ${spec.iterations.toLocaleString("en-US")} steps in pure Python (CPU work standing in for compiling) and generates ${formatBytes(spec.dataBytes)} of incompressible data (SHAKE-256) into the wheel, so the pip layer weighs about that much, like a real dependency layer;`;
