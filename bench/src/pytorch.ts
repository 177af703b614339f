import Docker from "dockerode";
import path from "node:path";
import { measureCodeOnly, type CodeOnlyProject, type Pair } from "./codechange.js";
import { DAEMON_SOCKETS, daemonLabel } from "./daemons.js";
import { cachedSteps, measureColdBuilds, STEP_BY_STEP_NOTE, stepByStepRows, projectInput, saltedFile, type BenchProject, type OverheadOptions, type Sample } from "./overhead.js";
import type { Table } from "./report.js";
import { ROOT_DIR, type Services } from "./stack.js";
import { formatBytes, formatMs, formatRatio, formatSummary, ratio, summarize } from "./stats.js";

const PROJECT_NAME = "examples/pytorch-mnist";
/** The catalog addition's image for framework pytorch 1.13.1, python 3.11, cpu (packages/catalog/local-additions.yaml). */
const BASE_IMAGE = "m1l0-local/pytorch:1.13.1-py3.11";
/** Where the base's layers are pushed once before measuring, so later repositories mount them. */
const BASE_REPOSITORY = "m1l0bench/base-pytorch";
const TARGET = 1.05;

export interface PytorchOptions {
  cold: OverheadOptions;
  /** code-only rebuild pairs on the other daemon; 0 skips them */
  codeOnlyPairs: number;
}

/** No requirements.txt (torch comes from the base): a comment in main.py makes the `COPY . ./` layer new. */
const PROJECT: BenchProject = { name: PROJECT_NAME, salted: (salt) => saltedFile(PROJECT_NAME, "main.py", salt) };

const CODE_ONLY: CodeOnlyProject = {
  baseImage: BASE_IMAGE,
  versions(salt) {
    const { source: _source, revision: _revision, ...config } = projectInput(PROJECT);
    const v1 = PROJECT.salted(salt);
    return {
      sourceDir: path.join(ROOT_DIR, PROJECT_NAME),
      v1,
      v2: { "main.py": `${v1["main.py"]}# code-only change\n` },
      config: { ...config, repository: `m1l0bench/torch-code-${salt}` },
    };
  },
  check(cold, warm) {
    const costly = cachedSteps(cold.log.replace(/^.*?\[build\] /gm, "")).filter((step) => ["COPY", "ADD", "RUN"].includes(step));
    if (costly.length) throw new Error(`the cold build took ${costly.join(", ")} from cache:\n${cold.log.slice(-1500)}`);
    if (!warm.log.includes(`cache from ${cold.record.image?.reference}`)) throw new Error(`the code-only rebuild did not use the cold build's image as cache:\n${warm.log.slice(-2500)}`);
  },
};

/** The base's layers in the registry, pushed from every daemon used: its first upload (~1 GB) is paid here, by neither variant. */
async function pushBaseOnce(services: Services, sockets: readonly string[]): Promise<void> {
  const authconfig = { username: services.registryUsername, password: services.registryPassword, serveraddress: services.registryHost };
  const repo = `${services.registryHost}/${BASE_REPOSITORY}`;
  for (const socket of sockets) {
    const docker = new Docker({ socketPath: socket });
    await docker.getImage(BASE_IMAGE).tag({ repo, tag: "latest" });
    try {
      const stream = await docker.getImage(`${repo}:latest`).push({ authconfig });
      await new Promise<void>((resolve, reject) =>
        docker.modem.followProgress(stream, (error, events: Array<{ error?: string }>) => {
          const failed = events?.find((event) => event.error);
          if (error || failed) reject(error ?? new Error(failed?.error));
          else resolve();
        }),
      );
    } finally {
      await docker.getImage(`${repo}:latest`).remove({ noprune: true }).catch(() => undefined);
    }
  }
}

/** Bytes a pull transfers: the manifest's layers and config as stored in the registry (compressed). */
async function registryBytes(services: Services, reference: string): Promise<number> {
  const [, repository, tag] = /^[^/]+\/(.+):([^:/]+)$/.exec(reference) ?? [];
  if (!repository || !tag) throw new Error(`cannot read a repository and tag from ${reference}`);
  const response = await fetch(`http://${services.registryHost}/v2/${repository}/manifests/${tag}`, {
    headers: {
      authorization: `Basic ${Buffer.from(`${services.registryUsername}:${services.registryPassword}`).toString("base64")}`,
      accept: "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
    },
  });
  if (!response.ok) throw new Error(`the registry answered ${response.status} for the manifest of ${reference}`);
  const manifest = (await response.json()) as { config: { size: number }; layers: Array<{ size: number }> };
  return manifest.config.size + manifest.layers.reduce((sum, layer) => sum + layer.size, 0);
}

export async function runPytorch(services: Services, options: PytorchOptions, log: (line: string) => void): Promise<Table> {
  const present = await new Docker({ socketPath: DAEMON_SOCKETS[0] }).getImage(BASE_IMAGE).inspect().catch(() => undefined);
  if (!present) throw new Error(`${BASE_IMAGE} is missing on the default daemon: run \`bash scripts/base-images.sh pytorch\` (scripts/bench.sh does)`);
  const sockets = options.codeOnlyPairs > 0 ? [DAEMON_SOCKETS[0], DAEMON_SOCKETS[1]] : [DAEMON_SOCKETS[0]];
  const warmupStarted = performance.now();
  await pushBaseOnce(services, sockets);
  log(`pytorch: base layers in the registry (${formatMs(performance.now() - warmupStarted)}, not counted)`);
  const cold = await measureColdBuilds(services, PROJECT, options.cold, log);
  const image = cold.ours[0]?.image;
  const pushedBytes = image ? await registryBytes(services, image.reference) : undefined;
  const pairs = options.codeOnlyPairs > 0 ? await measureCodeOnly(services, CODE_ONLY, options.codeOnlyPairs, log) : [];
  return pytorchTable(cold, pairs, image?.bytes, pushedBytes, Number(present.Size));
}

function pytorchTable(cold: { ours: Sample[]; cli: Sample[] }, pairs: Pair[], imageBytes: number | undefined, pushedBytes: number | undefined, baseBytes: number): Table {
  const ours = summarize(cold.ours.map((sample) => sample.totalMs));
  const cli = summarize(cold.cli.map((sample) => sample.totalMs));
  const coldRatio = ratio(ours.median, cli.median);
  const phases = (samples: Sample[]) =>
    [...new Set(samples.flatMap((sample) => Object.keys(sample.phases)))].map((name) => {
      const values = samples.map((sample) => sample.phases[name]).filter((value): value is number => value !== undefined);
      return [name, values.length ? formatSummary(summarize(values), formatMs) : "–"] as const;
    });
  const rows: string[][] = [
    ["cold build + push, wall time", formatSummary(ours, formatMs), formatSummary(cli, formatMs), formatRatio(coldRatio), `≤ ${TARGET}×`, coldRatio === undefined ? "–" : coldRatio <= TARGET ? "yes" : "no"],
    ...phases(cold.ours).map(([name, value]) => [`  ours: ${name}`, value, "", "", "", ""]),
    ...phases(cold.cli).map(([name, value]) => [`  CLI: ${name}`, "", value, "", "", ""]),
    ...stepByStepRows(cold.ours, cold.cli),
    [
      "image size: on the daemon (uncompressed) / in the registry (compressed layers + config)",
      `${imageBytes === undefined ? "–" : formatBytes(imageBytes)} / ${pushedBytes === undefined ? "–" : formatBytes(pushedBytes)}`,
      `base ${formatBytes(baseBytes)}`,
      "",
      "(informative)",
      "",
    ],
  ];
  if (pairs.length === 0) {
    rows.push(["code-only rebuild on another daemon", "not measured in --quick", "–", "–", "(informative)", ""]);
  } else {
    const warm = summarize(pairs.map((pair) => pair.warmMs));
    const coldOnDaemon = summarize(pairs.map((pair) => pair.coldMs));
    const labels = [...new Set(pairs.map((pair) => `${daemonLabel(pair.coldDaemon)} → ${daemonLabel(pair.warmDaemon)}`))].join(", ");
    rows.push([`code-only rebuild on another daemon (${labels}) vs its cold build (ours)`, formatSummary(warm, formatMs), formatSummary(coldOnDaemon, formatMs), formatRatio(ratio(warm.median, coldOnDaemon.median)), "(informative)", ""]);
    for (const name of Object.keys(pairs[0]?.warmPhases ?? {})) {
      const values = (pick: (pair: Pair) => number | undefined) => {
        const found = pairs.map(pick).filter((value): value is number => value !== undefined);
        return found.length ? formatSummary(summarize(found), formatMs) : "–";
      };
      rows.push([`  ${name}`, values((pair) => pair.warmPhases[name]), values((pair) => pair.coldPhases[name]), "", "", ""]);
    }
    const pulls = pairs.map((pair) => pair.pullMs).filter((value): value is number => value !== undefined);
    if (pulls.length) rows.push(["  the rebuild's pull of the cache image (worker log)", formatSummary(summarize(pulls), formatMs), "", "", "", ""]);
  }
  return {
    title: `10. A framework-sized image — ${PROJECT_NAME} on ${BASE_IMAGE}`,
    columns: ["metric", "ours (POST /builds → succeeded)", "baseline", "ratio", "target", "met?"],
    rows,
    notes: [
      `Cold build + push: the method of benchmark 1 (same code, bench/src/overhead.ts) on ${PROJECT_NAME}: same daemon, registry, generated Dockerfile (catalog with local-additions.yaml), ignores, \`--network none\`, 4 GiB limit, classic builder (\`DOCKER_BUILDKIT=0\`) for the CLI; a fresh repository and a unique comment in main.py per build (the project has no requirements.txt, so \`COPY . ./\` is the first layer of its own), \`docker builder prune -af\` between builds, variants alternating, ${cold.ours.length} build(s) each.`,
      "Ours also runs the import check (IMPORT_CHECK, on by default) before the push: one sandboxed run of the image that imports the entry's modules, torch among them — work the CLI does not do. It starts on the image of the generated Dockerfile's last file step, while the daemon commits the label step; its own time and the part the build waited for after the daemon's last step (both from the worker log) are shown under building → pushing.",
      STEP_BY_STEP_NOTE,
      `Before measuring, the base's layers are pushed once to ${BASE_REPOSITORY} from each daemon used (not counted): a daemon's first push of a ~${formatBytes(baseBytes)} base uploads it, later repositories mount it, as they mount a public framework image's layers on a real registry. So the push moves the project's layers only, and the size that matters is the pull's (the registry figure).`,
      pairs.length
        ? `Code-only rebuild: the method of benchmark 3 (bench/src/codechange.ts): v1 built cold on one daemon, v2 (one more comment in main.py) submitted to a stack whose only worker drives the other daemon; the rebuild pulls v1 as its cache image (\`cache from\`, checked) — the base is on both daemons (scripts/fleet.sh copies it), so only the project's layers move. With no dependency step to reuse, the rebuild does the cold build's work plus that pull: no target beyond reporting it.`
        : "Code-only rebuild: not measured in --quick (the full run measures it with the method of benchmark 3).",
    ],
  };
}
