import { execFile, spawn } from "node:child_process";

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** written to the command's stdin */
  input?: string | Buffer;
  timeoutMs?: number;
  cwd?: string;
}

/** Runs a command to completion and returns its stdout; a non-zero exit throws with its stderr. */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<string> {
  const timeoutMs = options.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { env: options.env ?? process.env, cwd: options.cwd, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, killSignal: "SIGKILL" },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`${command} ${args.join(" ")} failed${error.killed ? ` (killed after ${timeoutMs} ms)` : ""}: ${stderr.trim() || error.message}`, { cause: error }));
        else resolve(stdout);
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
    else child.stdin?.end();
  });
}

/** Runs `producer | consumer` (e.g. docker save | docker exec -i node docker load) with a deadline. */
export function pipe(producer: [string, string[]], consumer: [string, string[]], timeoutMs = 300_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const left = spawn(producer[0], producer[1], { stdio: ["ignore", "pipe", "pipe"] });
    const right = spawn(consumer[0], consumer[1], { stdio: ["pipe", "pipe", "pipe"] });
    let stderr = "";
    left.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    right.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    right.stdout.resume();
    left.stdout.pipe(right.stdin);
    const timer = setTimeout(() => {
      left.kill("SIGKILL");
      right.kill("SIGKILL");
    }, timeoutMs);
    let pending = 2;
    let failed = false;
    const done = (name: string) => (code: number | null) => {
      if (code !== 0 && !failed) {
        failed = true;
        clearTimeout(timer);
        reject(new Error(`${name} exited ${code}: ${stderr.trim()}`));
      }
      if (--pending === 0 && !failed) {
        clearTimeout(timer);
        resolve();
      }
    };
    left.on("close", done(producer.join(" ")));
    right.on("close", done(consumer.join(" ")));
  });
}

/** A progress line on stderr (long deployment tests: shows where one is when it hangs or fails). */
export function step(what: string): void {
  process.stderr.write(`[deploy ${new Date().toISOString().slice(11, 19)}] ${what}\n`);
}

/** fetch with its own deadline (a timer and controller of ours, cleared in finally). */
export async function fetchWithin(url: string, init: RequestInit = {}, timeoutMs = 10_000): Promise<Response> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new Error(`${url}: no answer within ${timeoutMs} ms`)), timeoutMs);
  try {
    const response = await fetch(url, { ...init, signal: controller.signal });
    // read the body inside the deadline too
    const body = await response.arrayBuffer();
    return new Response(body, { status: response.status, headers: response.headers });
  } finally {
    clearTimeout(timer);
  }
}
