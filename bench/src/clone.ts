import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { CloneChildResult } from "./clone-child.js";
import { ensureRepo, type RepoFixture, type RepoSpec } from "./clone-repo.js";
import { topSelfTime, type SelfTime } from "./cpu-profile.js";
import type { Table } from "./report.js";
import type { Services } from "./stack.js";
import { formatBytes, formatMs, formatRatio, formatSummary, ratio, summarize } from "./stats.js";
import { runCommand } from "./util.js";

export interface CloneOptions {
  spec: RepoSpec;
  repetitions: number;
  /** one more, untimed, run of ours under node --cpu-prof, its top self-time functions in the notes */
  profile: boolean;
}

interface CloneRun {
  ms: number;
  /** bytes and files of the working tree left behind (.git excluded) */
  bytes: number;
  files: number;
  /** ours: VmHWM minus RSS before the fetch; git: the largest git process's peak RSS */
  rssBytes: number;
  /** ours: the fetch's progress lines with time and peak RSS growth when each was logged */
  phases?: CloneChildResult["phases"];
}

/** The working tree's bytes and files, without .git (which our fetch removes and git keeps). */
function checkedOut(dir: string): { bytes: number; files: number } {
  let bytes = 0;
  let files = 0;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const full = path.join(entry.parentPath, entry.name);
    if (!entry.isFile() || path.relative(dir, full).split(path.sep)[0] === ".git") continue;
    bytes += statSync(full).size;
    files += 1;
  }
  return { bytes, files };
}

/** Runs `clone` into a fresh temporary dir, measures what it left there, removes it. */
async function inWorkDir(clone: (dir: string) => Promise<Omit<CloneRun, "bytes" | "files">>): Promise<CloneRun> {
  const dir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-clone-run-"));
  try {
    const measured = await clone(dir);
    return { ...measured, ...checkedOut(dir) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const CHILD = fileURLToPath(new URL("./clone-child.js", import.meta.url));

async function oursClone(url: string, dir: string, nodeOptions: string[] = []): Promise<CloneChildResult> {
  const result = await runCommand(process.execPath, [...nodeOptions, CHILD, url, dir]);
  return JSON.parse(result.stdout.trim().split("\n").at(-1) ?? "") as CloneChildResult;
}

async function gitClone(url: string, dir: string): Promise<{ ms: number; rssBytes: number }> {
  // GNU time reports the largest ru_maxrss among git and the processes it waited for (remote-http, index-pack)
  const result = await runCommand("/usr/bin/time", ["-v", "git", "clone", "-q", "--depth", "1", url, dir]);
  const kib = /Maximum resident set size \(kbytes\): (\d+)/.exec(result.output)?.[1];
  if (kib === undefined) throw new Error(`no maximum RSS in /usr/bin/time's output:\n${result.output.slice(-500)}`);
  return { ms: result.ms, rssBytes: Number(kib) * 1024 };
}

async function profileOurs(url: string): Promise<SelfTime[]> {
  const profileDir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-clone-prof-"));
  try {
    await inWorkDir(async (dir) => {
      const result = await oursClone(url, dir, ["--cpu-prof", `--cpu-prof-dir=${profileDir}`]);
      return { ms: result.ms, rssBytes: result.peakGrowthBytes };
    });
    const file = readdirSync(profileDir).find((name) => name.endsWith(".cpuprofile"));
    if (!file) throw new Error("node --cpu-prof wrote no profile");
    return topSelfTime(path.join(profileDir, file), 10);
  } finally {
    rmSync(profileDir, { recursive: true, force: true });
  }
}

const mbPerSecond = (run: CloneRun) => run.bytes / 1e6 / (run.ms / 1000);
const mbps = (value: number) => `${value.toFixed(1)} MB/s`;

function describeRepo(repo: RepoFixture, spec: RepoSpec): string {
  const weights = spec.weightsMiB.map((mib) => `${mib}`).join(", ");
  return `Repository: ${repo.treeFiles.toLocaleString("en")} files, ${(repo.treeBytes / 1e6).toFixed(0)} MB checked out (${formatBytes(repo.packBytes)} pack on the server), one commit ${repo.commit.slice(0, 12)}: weight files of ${weights} MiB (seeded random bytes, as trained weights barely compress) and ${spec.smallFiles.toLocaleString("en")} .py/.txt/.csv files of ${formatBytes(spec.smallBytes[0])}–${formatBytes(spec.smallBytes[1])} (seeded text). Generated once with the git CLI and repacked into one pack, served by the local git server (\`git http-backend\` behind scripts/git-server.mjs) at ${repo.url}.`;
}

/** Where the median run of ours spent its time and memory, from its progress lines. */
function describePhases(ours: CloneRun[]): string {
  const sorted = [...ours].sort((left, right) => left.ms - right.ms);
  const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
  // a line is logged when its phase ends, so each phase runs from the previous line to its own
  const steps = (median.phases ?? []).filter((phase) => !phase.line.startsWith("cloning") && !phase.line.startsWith("resolved"));
  const described = steps.map((phase, index) => `${phase.line} until ${formatMs(phase.ms)} (${formatMs(phase.ms - (steps[index - 1]?.ms ?? 0))}, peak RSS growth ${formatBytes(phase.peakGrowthBytes)} by then)`);
  return `Phases of ours in its median run (${formatMs(median.ms)}), each ending when its progress line is logged: ${described.join("; ")}. Our fetch (packages/source/src/git/shallow-fetch.ts) streams the server's pack to disk as it arrives ("received a pack"), indexes it natively ("Indexing objects", then "Resolving deltas" when the pack holds deltas: node:zlib inflate and SHA-1 of every object, files of 1 MiB or more inflated in slices), then checks the tree out from the pack ("Updating workdir", 8 files in flight, large files inflated while written); git does the same in its own processes (index-pack while receiving)`;
}

export async function runClone(services: Services, options: CloneOptions, log: (line: string) => void): Promise<Table> {
  const repo = ensureRepo(services, options.spec, log);
  // untimed: the server's pack into the page cache for both variants
  await inWorkDir((dir) => gitClone(repo.url, dir));
  const ours: CloneRun[] = [];
  const git: CloneRun[] = [];
  for (let rep = 0; rep < options.repetitions; rep++) {
    const order = rep % 2 === 0 ? (["ours", "git"] as const) : (["git", "ours"] as const);
    for (const variant of order) {
      if (variant === "git") git.push(await inWorkDir((dir) => gitClone(repo.url, dir)));
      else {
        ours.push(
          await inWorkDir(async (dir) => {
            const result = await oursClone(repo.url, dir);
            if (result.commit !== repo.commit) throw new Error(`our fetch resolved ${result.commit}, the repository's HEAD is ${repo.commit}`);
            return { ms: result.ms, rssBytes: result.peakGrowthBytes, phases: result.phases };
          }),
        );
      }
    }
    log(`clone rep ${rep + 1}/${options.repetitions}: ours ${formatMs(ours.at(-1)!.ms)}, git ${formatMs(git.at(-1)!.ms)}`);
  }
  const mismatch = [...ours, ...git].find((run) => run.bytes !== repo.treeBytes || run.files !== repo.treeFiles);
  if (mismatch) throw new Error(`a clone checked out ${mismatch.files} files / ${mismatch.bytes} bytes, the commit has ${repo.treeFiles} / ${repo.treeBytes}`);
  const profile = options.profile ? await profileOurs(repo.url) : [];

  const ourThroughput = summarize(ours.map(mbPerSecond));
  const gitThroughput = summarize(git.map(mbPerSecond));
  const throughputRatio = ratio(ourThroughput.median, gitThroughput.median);
  const ourMs = summarize(ours.map((run) => run.ms));
  const gitMs = summarize(git.map((run) => run.ms));
  const ourRss = summarize(ours.map((run) => run.rssBytes));
  const gitRss = summarize(git.map((run) => run.rssBytes));
  const rssLimit = 256 * 1024 * 1024;
  return {
    title: "8. Clone at real size — shallow clone of a generated ML repository",
    columns: ["metric", "ours (fetchSource: own shallow fetch)", "git clone --depth 1", "ratio", "target", "met?"],
    rows: [
      ["throughput (checked-out MB / s)", formatSummary(ourThroughput, mbps), formatSummary(gitThroughput, mbps), formatRatio(throughputRatio), "≥ 0.7× git", throughputRatio === undefined ? "–" : throughputRatio >= 0.7 ? "yes" : "no"],
      ["wall time", formatSummary(ourMs, formatMs), formatSummary(gitMs, formatMs), formatRatio(ratio(ourMs.median, gitMs.median)), "", ""],
      ["peak RSS growth", formatSummary(ourRss, formatBytes), formatSummary(gitRss, formatBytes), formatRatio(ratio(ourRss.median, gitRss.median)), "≤ 256 MiB", ourRss.max <= rssLimit ? "yes" : "no"],
    ],
    notes: [
      describeRepo(repo, options.spec),
      "Variants alternate, each into a fresh temporary dir (removed after), after one untimed git clone that puts the server's pack in the page cache. Both check out the same files (verified after every run); ours also removes .git, as the worker's fetch does.",
      "Ours: `fetchSource` of @m1l0/source, the function the worker's fetch phase calls, with the worker's policy for a local server (http allowed, 127.0.0.0/8 allow-listed) and default caps, in a child Node process timed from the call to its return. Git: `/usr/bin/time -v git clone -q --depth 1 <url>`, timed from spawn to exit.",
      `RSS: ours is VmHWM after the fetch minus RSS before it (after loading the modules, VmHWM reset through /proc/self/clear_refs first); git's is GNU time's maximum resident set size, the peak of the largest single process of the clone (git, git-remote-http, index-pack), start-up included, since git's baseline is a few MiB.`,
      describePhases(ours),
      ...(profile.length > 0
        ? [`Top self time of ours (one extra run under \`node --cpu-prof\`): ${profile.map((entry) => `${entry.name} ${formatMs(entry.ms)} (${(entry.share * 100).toFixed(0)} %)`).join("; ")}.`]
        : []),
    ],
  };
}
