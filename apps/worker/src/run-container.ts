import { AbortScope, BuilderError, isBuilderError } from "@m1l0/config";
import type Docker from "dockerode";
import { randomBytes } from "node:crypto";
import { RUN_OUTPUT_MAX_BYTES, type RunRequest, type RunResult } from "./builder.js";
import { daemonAnswered, daemonCall, daemonError, daemonMessage } from "./daemon.js";

export interface RunLimits {
  /** the daemon-call deadlines of short calls (create, start, logs, remove) */
  calls: { endpoint: string; timeoutMs: number };
  /** most processes the container may have (the worker's BUILD_PIDS_LIMIT); 0: none */
  pidsLimit: number;
}

/** The daemon could not start the program: it is not in the image (or not executable). */
const NOT_IN_IMAGE = /executable file not found|no such file or directory|not found in \$PATH|permission denied/i;

/**
 * Runs `request.command` in a container of `request.image`: no network, read-only root
 * filesystem with a small /tmp, every capability dropped, no new privileges, the build's
 * memory, CPU and pids limits. The deadline kills it; the container is removed in every case.
 */
export async function runContainer(docker: Docker, limits: RunLimits, request: RunRequest): Promise<RunResult> {
  const [program, ...args] = request.command;
  if (!program) throw new BuilderError("INTERNAL", "run needs a command", { retryable: false });
  const call = <T>(what: string, work: (abortSignal: AbortSignal) => Promise<T>) =>
    daemonCall(limits.calls, `${what} of a run of ${request.image}`, work, request.signal).catch((cause: unknown) => {
      // a cancelled build is not a daemon failure
      if (request.signal?.aborted) throw request.signal.reason as unknown;
      throw isBuilderError(cause) ? cause : daemonAnswered(cause) ? new Error(`${what} of a run of ${request.image} failed: ${daemonMessage(cause)}`, { cause }) : daemonError(cause, limits.calls.endpoint);
    });
  // named, so a create whose answer never came (a deadline, a cancel) can still be removed
  const name = `m1l0-run-${randomBytes(8).toString("hex")}`;
  const remove = (target: Docker.Container) =>
    // its own deadline, not the build's signal: a cancelled build still removes its container
    daemonCall(limits.calls, `remove of a run of ${request.image}`, (abortSignal) => target.remove({ abortSignal, force: true, v: true })).catch(() => undefined);
  const container = await call("create", (abortSignal) =>
    docker.createContainer({
      abortSignal,
      name,
      Image: request.image,
      Entrypoint: [program],
      Cmd: args,
      Env: Object.entries(request.env ?? {}).map(([key, value]) => `${key}=${value}`),
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: "none",
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": "rw,noexec,nosuid,size=16m" },
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        ...(limits.pidsLimit > 0 ? { PidsLimit: limits.pidsLimit } : {}),
        ...(request.memoryBytes ? { Memory: request.memoryBytes, MemorySwap: request.memoryBytes } : {}),
        ...(request.cpuQuota ? { CpuPeriod: 100_000, CpuQuota: request.cpuQuota } : {}),
      },
    } as Docker.ContainerCreateOptions),
  ).catch(async (error: unknown) => {
    await remove(docker.getContainer(name));
    throw error;
  });
  try {
    try {
      await call("start", (abortSignal) => container.start({ abortSignal }));
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      if (!isBuilderError(error) && NOT_IN_IMAGE.test(message)) return { exitCode: 127, stdout: "", stderr: message, timedOut: false };
      throw error;
    }
    const deadline = new AbortScope({ timeoutMs: request.timeoutMs, signal: request.signal });
    let exitCode = -1;
    try {
      const status = (await deadline.race(container.wait({ abortSignal: deadline.signal }))) as { StatusCode?: number };
      exitCode = status.StatusCode ?? -1;
    } catch (error) {
      if (!deadline.timedOut) throw request.signal?.aborted ? (request.signal.reason as unknown) : isBuilderError(error) ? error : daemonError(error, limits.calls.endpoint);
    } finally {
      deadline.dispose();
    }
    const timedOut = deadline.timedOut;
    if (timedOut) await call("kill", (abortSignal) => container.kill({ abortSignal })).catch(() => undefined);
    const output = (await call("logs", (abortSignal) => container.logs({ abortSignal, stdout: true, stderr: true, follow: false }))) as unknown as Buffer;
    return { exitCode: timedOut ? -1 : exitCode, ...demux(output), timedOut };
  } finally {
    await remove(container);
  }
}

/** Splits the daemon's multiplexed log stream (8-byte frame headers: 1 stdout, 2 stderr). */
export function demux(buffer: Buffer): { stdout: string; stderr: string } {
  const parts: Record<1 | 2, Buffer[]> = { 1: [], 2: [] };
  const sizes: Record<1 | 2, number> = { 1: 0, 2: 0 };
  for (let offset = 0; offset + 8 <= buffer.length; ) {
    const stream = buffer[offset] === 2 ? 2 : 1;
    const size = buffer.readUInt32BE(offset + 4);
    const payload = buffer.subarray(offset + 8, offset + 8 + size);
    if (sizes[stream] < RUN_OUTPUT_MAX_BYTES) {
      parts[stream].push(payload.subarray(0, RUN_OUTPUT_MAX_BYTES - sizes[stream]));
      sizes[stream] += payload.length;
    }
    offset += 8 + size;
  }
  return { stdout: Buffer.concat(parts[1]).toString("utf8"), stderr: Buffer.concat(parts[2]).toString("utf8") };
}
