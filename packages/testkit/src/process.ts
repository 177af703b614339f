import { spawn, type ChildProcess } from "node:child_process";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A chunk handler that appends whole lines only, `label: line`: a chunk may end mid-line, and
 * the rest waits for the next chunk. With `maxLines`, only about the last that many are kept
 * (long benchmark runs log tens of thousands of requests; the tail is what diagnoses them).
 */
export function lineCollector(lines: string[], label: string, maxLines?: number): { write(chunk: Buffer | string): void; end(): void } {
  let rest = "";
  const push = (parts: string[]) => {
    lines.push(...parts.filter(Boolean).map((line) => `${label}: ${line}`));
    if (maxLines !== undefined && lines.length > maxLines * 2) lines.splice(0, lines.length - maxLines);
  };
  return {
    write(chunk) {
      const parts = (rest + chunk.toString()).split("\n");
      rest = parts.pop() ?? "";
      push(parts);
    },
    end() {
      push([rest]);
      rest = "";
    },
  };
}

/** Runs a built script (apps/*\/dist) with `env`, its stdout and stderr collected as labelled lines. */
export function spawnNode(script: string, env: NodeJS.ProcessEnv, lines: string[], label: string, maxLines?: number, nodeArgs: readonly string[] = []): ChildProcess {
  const child = spawn(process.execPath, [...nodeArgs, script], { env, stdio: ["ignore", "pipe", "pipe"] });
  for (const stream of [child.stdout, child.stderr]) {
    const collect = lineCollector(lines, label, maxLines);
    stream?.on("data", (chunk: Buffer) => collect.write(chunk));
    stream?.on("end", () => collect.end());
  }
  return child;
}

/**
 * Stops a child and waits for its exit: `signal` first, SIGKILL after `killAfterMs` (0: never).
 * A child that already exited (or a test killed) resolves at once.
 */
export function stopChild(child: ChildProcess | undefined, options: { signal?: NodeJS.Signals; killAfterMs?: number } = {}): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill(options.signal ?? "SIGTERM");
    const killAfterMs = options.killAfterMs ?? 10_000;
    if (killAfterMs > 0) setTimeout(() => child.kill("SIGKILL"), killAfterMs).unref();
  });
}

/** Polls `check` until it holds; throws naming `what` once `timeoutMs` has passed. */
export async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean> | boolean, intervalMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} did not come up within ${timeoutMs} ms`);
    await sleep(intervalMs);
  }
}

export interface Finished {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a Node script to its end and returns its exit code and output (a CLI or the bench). */
export function runNode(args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}
