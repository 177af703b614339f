import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { RunRequest, RunResult } from "../../src/builder.js";

/**
 * Runs a command with the host's python3 in a folder holding `files` (a project as the
 * generated Dockerfile copies it to its workdir): the import checker's unit tests, and the
 * fake builder's `python` in pipeline tests.
 */
export async function runInProject(files: ReadonlyMap<string, Buffer | string>, command: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  const root = mkdtempSync(path.join(tmpdir(), "m1l0-import-check-"));
  try {
    for (const [name, content] of files) {
      mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
      writeFileSync(path.join(root, name), content);
    }
    const [program = "python3", ...args] = command;
    return await new Promise<RunResult>((resolve) => {
      execFile(program, args, { cwd: root, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", ...options.env }, timeout: options.timeoutMs ?? 60_000 }, (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        resolve({ exitCode: code, stdout, stderr, timedOut: Boolean(error?.killed) });
      });
    });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** A FakeImageBuilder `python`: the image's files, the host's python3. */
export const hostPython = (request: RunRequest, files: ReadonlyMap<string, Buffer>) =>
  runInProject(files, request.command, { ...(request.env ? { env: request.env } : {}), timeoutMs: request.timeoutMs });
