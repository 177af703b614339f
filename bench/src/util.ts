import type { BuildRecord, BuildStatus } from "@m1l0/config";
import { isTerminal } from "@m1l0/config";
import { execFileSync, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Services } from "./stack.js";

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function shortId(): string {
  return randomUUID().replace(/-/g, "").slice(0, 10);
}

export interface CommandResult {
  ms: number;
  /** stdout and stderr interleaved, for logs and error messages */
  output: string;
  /** stdout alone, for machine-readable results */
  stdout: string;
}

/** Runs a command to completion, timing it from spawn to exit; throws with its output when it fails. */
export function runCommand(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ["pipe", "pipe", "pipe"] });
    const chunks: Buffer[] = [];
    const stdoutChunks: Buffer[] = [];
    child.stdout.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      stdoutChunks.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => chunks.push(chunk));
    child.stdin.end(options.input ?? "");
    child.on("error", reject);
    child.on("close", (code) => {
      const ms = performance.now() - started;
      const output = Buffer.concat(chunks).toString();
      if (code === 0) resolve({ ms, output, stdout: Buffer.concat(stdoutChunks).toString() });
      else reject(new Error(`${command} ${args.join(" ")} exited with ${code}:\n${output.slice(-2000)}`));
    });
  });
}

const apiTokens = new Map<string, string>();

/** Makes apiFetch (and postBuild, waitForTerminal) send `Authorization: Bearer <token>` to this API. */
export function registerApiToken(apiUrl: string, token: string): void {
  apiTokens.set(new URL(apiUrl).origin, token);
}

/** fetch with the registered token for the URL's API: the benchmarks run the API with auth on, as in production. */
export function apiFetch(url: string, init: RequestInit = {}): Promise<Response> {
  const token = apiTokens.get(new URL(url).origin);
  const headers = new Headers(init.headers);
  if (token && !headers.has("authorization")) headers.set("authorization", `Bearer ${token}`);
  return fetch(url, { ...init, headers });
}

export async function postBuild(apiUrl: string, config: unknown): Promise<string> {
  const response = await apiFetch(`${apiUrl}/builds`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(config) });
  const body = (await response.json()) as { id?: string };
  if (response.status !== 202 || !body.id) throw new Error(`POST /builds answered ${response.status}: ${JSON.stringify(body)}`);
  return body.id;
}

/** Polls GET /builds/:id until the build reaches a terminal status (poll interval bounds the timing error). */
export async function waitForTerminal(apiUrl: string, id: string, options: { pollMs: number; timeoutMs: number }): Promise<BuildRecord> {
  const deadline = Date.now() + options.timeoutMs;
  for (;;) {
    // an unanswered poll (a loaded machine, a reset keep-alive connection) is retried until the deadline
    const response = await apiFetch(`${apiUrl}/builds/${id}`).catch(() => undefined);
    if (response?.ok) {
      const record = (await response.json()) as BuildRecord;
      if (isTerminal(record.status)) return record;
    }
    if (Date.now() > deadline) throw new Error(`build ${id} did not finish within ${options.timeoutMs} ms`);
    await sleep(options.pollMs);
  }
}

/** Milliseconds between two recorded status timestamps of a build, when both exist. */
export function between(record: BuildRecord, from: BuildStatus, to: BuildStatus): number | undefined {
  const start = record.timestamps[from];
  const end = record.timestamps[to];
  return start && end ? Date.parse(end) - Date.parse(start) : undefined;
}

/** A bare repo served by the git server, made from a directory plus edits (as tests/e2e does). */
export function createGitFixture(services: Services, sourceDir: string, edits: Record<string, string>): { url: string; cleanup(): void } {
  const name = `bench-${shortId()}`;
  const work = mkdtempSync(path.join(tmpdir(), "m1l0-bench-fixture-"));
  try {
    cpSync(sourceDir, work, { recursive: true });
    for (const [file, content] of Object.entries(edits)) {
      mkdirSync(path.dirname(path.join(work, file)), { recursive: true });
      writeFileSync(path.join(work, file), content);
    }
    const git = (...args: string[]) => execFileSync("git", ["-c", "user.name=bench", "-c", "user.email=bench@localhost", ...args], { cwd: work, stdio: "pipe" });
    git("init", "-q", "-b", "main");
    git("add", "-A");
    git("commit", "-q", "-m", "bench fixture");
    const parent = path.join(services.gitFixturesDir, name);
    const bare = path.join(parent, "repo.git");
    mkdirSync(parent, { recursive: true });
    execFileSync("git", ["clone", "-q", "--bare", work, bare]);
    execFileSync("git", ["-C", bare, "symbolic-ref", "HEAD", "refs/heads/main"]);
    return { url: `${services.gitServerUrl}/${name}/repo.git`, cleanup: () => rmSync(parent, { recursive: true, force: true }) };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
