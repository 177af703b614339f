import { execFileSync } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Services } from "./stack.js";

/**
 * The shape of a synthetic ML repository: a few large weight files (random bytes, as trained
 * weights barely compress) and many small source, text and CSV files. Bump `version` whenever
 * the generator changes so cached fixtures are rebuilt.
 */
export interface RepoSpec {
  name: string;
  version: number;
  /** sizes of the weight files in MiB (.pt and .bin, random bytes) */
  weightsMiB: number[];
  /** small files: .py, .txt and .csv in turns, 100 per directory */
  smallFiles: number;
  /** each small file's size is drawn uniformly from this range (bytes) */
  smallBytes: [number, number];
}

// ~300 MB in ~10,000 files: 140 MiB of weights, the rest source, docs and data tables
export const FULL_REPO: RepoSpec = { name: "full", version: 1, weightsMiB: [24, 32, 36, 40, 8], smallFiles: 9_995, smallBytes: [512, 32 * 1024] };
export const QUICK_REPO: RepoSpec = { name: "quick", version: 1, weightsMiB: [8], smallFiles: 500, smallBytes: [512, 48 * 1024] };

export interface RepoFixture {
  url: string;
  commit: string;
  /** bytes of the working tree a checkout writes, and its file count */
  treeBytes: number;
  treeFiles: number;
  /** bytes of the bare repository's pack (what a clone transfers, about) */
  packBytes: number;
}

const MARKER = "m1l0-bench-clone.json";
const MiB = 1024 * 1024;

/** Deterministic pseudo-random bytes: AES-256-CTR keystream, keyed by the seed and the file's name. */
function randomContent(seed: string, bytes: number): Buffer {
  const key = createHash("sha256").update(`m1l0-bench-clone:${seed}`).digest();
  const iv = createHash("sha256").update(`iv:${seed}`).digest().subarray(0, 16);
  return createCipheriv("aes-256-ctr", key, iv).update(Buffer.alloc(bytes));
}

/** A small seeded generator (xorshift32), for file sizes and words. */
function seeded(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

const WORDS = ["self", "tensor", "model", "layer", "import", "torch", "return", "def", "class", "batch", "loss", "optimizer", "epoch", "train", "eval", "data", "loader", "config", "weight", "bias", "forward", "hidden", "dropout", "embedding", "attention", "norm", "shape", "device", "cuda", "numpy", "np", "float", "int", "for", "in", "range", "if", "else", "None", "True", "False", "print", "logging", "step", "grad", "lr", "scheduler", "checkpoint", "save", "load"];

/** Text that compresses like source code does (a few × with zlib), cut to exactly `bytes`. */
function textContent(next: () => number, kind: "py" | "txt" | "csv", bytes: number): Buffer {
  const lines: string[] = [];
  let length = 0;
  while (length < bytes) {
    let line: string;
    if (kind === "csv") line = Array.from({ length: 8 }, () => ((next() % 1_000_000) / 1000).toFixed(3)).join(",");
    else {
      const words = Array.from({ length: 3 + (next() % 9) }, () => WORDS[next() % WORDS.length]!);
      line = kind === "py" ? `${" ".repeat(4 * (next() % 3))}${words.join(kind === "py" && next() % 2 ? "." : " ")}` : words.join(" ");
    }
    lines.push(line);
    length += line.length + 1;
  }
  return Buffer.from(`${lines.join("\n")}\n`).subarray(0, bytes);
}

function writeTree(root: string, spec: RepoSpec): void {
  const next = seeded(0x5eed + spec.version);
  const write = (relative: string, content: Buffer) => {
    const file = path.join(root, relative);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
  };
  spec.weightsMiB.forEach((mib, index) => {
    const name = index % 2 === 0 ? `weights/model_${index}.pt` : `weights/shard_${index}.bin`;
    write(name, randomContent(name, mib * MiB));
  });
  const kinds = ["py", "txt", "csv"] as const;
  const [min, max] = spec.smallBytes;
  for (let index = 0; index < spec.smallFiles; index++) {
    const kind = kinds[index % 3]!;
    const dir = `${kind === "py" ? "src" : kind === "txt" ? "docs" : "data"}/part_${String(Math.floor(index / 300)).padStart(3, "0")}`;
    write(`${dir}/file_${index}.${kind}`, textContent(next, kind, min + (next() % (max - min + 1))));
  }
}

function sizeOf(dir: string, git: (...args: string[]) => string): { treeBytes: number; treeFiles: number; packBytes: number } {
  const entries = git("-C", dir, "ls-tree", "-r", "-l", "HEAD").trim().split("\n");
  const treeBytes = entries.reduce((sum, line) => sum + Number(line.split(/\s+/)[3] ?? 0), 0);
  const packKiB = /size-pack: (\d+)/.exec(git("-C", dir, "count-objects", "-v"))?.[1];
  return { treeBytes, treeFiles: entries.length, packBytes: Number(packKiB ?? 0) * 1024 };
}

/**
 * The benchmark's repository, served by the git server: generated once with the git CLI and
 * kept under the git fixtures dir; a marker beside the bare repo names the spec it was made from.
 */
export function ensureRepo(services: Services, spec: RepoSpec, log: (line: string) => void): RepoFixture {
  const name = `bench-clone-${spec.name}`;
  const parent = path.join(services.gitFixturesDir, name);
  const bare = path.join(parent, "repo.git");
  const marker = path.join(parent, MARKER);
  const url = `${services.gitServerUrl}/${name}/repo.git`;
  const git = (...args: string[]) => execFileSync("git", args, { encoding: "utf8", maxBuffer: 256 * MiB, stdio: ["ignore", "pipe", "pipe"] });
  if (existsSync(marker)) {
    const saved = JSON.parse(readFileSync(marker, "utf8")) as { spec: RepoSpec; commit: string };
    if (JSON.stringify(saved.spec) === JSON.stringify(spec) && git("-C", bare, "rev-parse", "HEAD").trim() === saved.commit) {
      return { url, commit: saved.commit, ...sizeOf(bare, git) };
    }
  }
  log(`clone: generating the ${spec.name} repository in ${bare} (once)`);
  rmSync(parent, { recursive: true, force: true });
  const work = mkdtempSync(path.join(tmpdir(), "m1l0-bench-clone-"));
  try {
    writeTree(work, spec);
    // fixed identity and dates: the same spec always makes the same commit
    const env = { ...process.env, GIT_AUTHOR_NAME: "m1l0-bench", GIT_AUTHOR_EMAIL: "bench@localhost", GIT_COMMITTER_NAME: "m1l0-bench", GIT_COMMITTER_EMAIL: "bench@localhost", GIT_AUTHOR_DATE: "2026-01-01T00:00:00Z", GIT_COMMITTER_DATE: "2026-01-01T00:00:00Z" };
    const inWork = (...args: string[]) => execFileSync("git", ["-C", work, ...args], { env, stdio: "pipe" });
    inWork("init", "-q", "-b", "main");
    inWork("add", "-A");
    inWork("commit", "-q", "-m", `synthetic ML repository (${spec.name}, v${spec.version})`);
    mkdirSync(parent, { recursive: true });
    git("clone", "-q", "--bare", work, bare);
    // one pack, as a hosted repository has: the server then streams stored objects instead of recompressing loose ones
    git("-C", bare, "repack", "-a", "-d", "-q");
    git("-C", bare, "symbolic-ref", "HEAD", "refs/heads/main");
    const commit = git("-C", bare, "rev-parse", "HEAD").trim();
    writeFileSync(marker, `${JSON.stringify({ spec, commit })}\n`);
    return { url, commit, ...sizeOf(bare, git) };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
