import type { BuildRecord, BuildStatus } from "@m1l0/config";
import { isTerminal } from "@m1l0/config";
import { createRedis } from "@m1l0/queue";
import { apiFetch, createGitFixture as createTestGitFixture } from "@m1l0/testkit";
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import type { Services } from "./stack.js";
import { LineStamper, type StampedLine } from "./steps.js";

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
  /** stdout's lines, each with when it arrived (ms from spawn); only with `stampLines` */
  lines?: StampedLine[];
}

/** Runs a command to completion, timing it from spawn to exit; throws with its output when it fails. */
export function runCommand(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; stampLines?: boolean } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ["pipe", "pipe", "pipe"] });
    const chunks: Buffer[] = [];
    const stdoutChunks: Buffer[] = [];
    const stamper = options.stampLines ? new LineStamper(started) : undefined;
    child.stdout.on("data", (chunk: Buffer) => {
      stamper?.write(chunk);
      chunks.push(chunk);
      stdoutChunks.push(chunk);
    });
    child.stderr.on("data", (chunk: Buffer) => chunks.push(chunk));
    child.stdin.end(options.input ?? "");
    child.on("error", reject);
    child.on("close", (code) => {
      const ms = performance.now() - started;
      const output = Buffer.concat(chunks).toString();
      stamper?.end();
      if (code === 0) resolve({ ms, output, stdout: Buffer.concat(stdoutChunks).toString(), ...(stamper ? { lines: stamper.lines } : {}) });
      else reject(new Error(`${command} ${args.join(" ")} exited with ${code}:\n${output.slice(-2000)}`));
    });
  });
}

export { apiFetch, registerApiToken } from "@m1l0/testkit";

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

/** A bare repo served by the git server, made from a directory plus edits (the test kit's, named bench-…). */
export function createGitFixture(sourceDir: string, edits: Record<string, string>): { url: string; cleanup(): void } {
  return createTestGitFixture(sourceDir, edits, `bench-${shortId()}`);
}

/** Every key of a benchmark's own Redis namespace (records, event streams, last-image keys): nothing of it stays in the shared Redis. */
export async function forgetNamespace(services: Services, keyPrefix: string): Promise<void> {
  const redis = createRedis(services.redisUrl, "producer");
  try {
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 500);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== "0");
  } finally {
    await redis.quit();
  }
}
