import type { BuildConfig } from "@m1l0/config";
import type { PushTarget } from "@m1l0/registry";
import type { Logger } from "pino";
import type { PipelineDeps } from "../pipeline.js";

export type LogPhase = "fetch" | "build" | "push";

/** Writes one phase's log lines; a rejected write is logged, never thrown (a log line must not fail a build). */
export type PhaseLog = (line: string) => Promise<void>;

/** What every phase of one attempt at one build shares. */
export interface Attempt {
  deps: PipelineDeps;
  buildId: string;
  config: BuildConfig;
  target: PushTarget;
  /** cancel, timeout, shutdown or a lost lock */
  signal: AbortSignal | undefined;
  logger: Logger;
  log: Record<LogPhase, PhaseLog>;
}

export function phaseLogs(deps: Pick<PipelineDeps, "store">, buildId: string, logger: Logger): Record<LogPhase, PhaseLog> {
  const writer = (phase: LogPhase): PhaseLog => (line) =>
    deps.store.appendLog(buildId, phase, line).then(
      () => undefined,
      (error: unknown) => logger.warn({ err: error, phase }, "log append failed"),
    );
  return { fetch: writer("fetch"), build: writer("build"), push: writer("push") };
}

/** `{ signal }` when there is one (exactOptionalPropertyTypes: no `signal: undefined`). */
export function withSignal(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal ? { signal } : {};
}
