import type { Logger } from "pino";
import { BuildAborted, type BuildLifecycle } from "./lifecycle.js";

export interface ShutdownOptions {
  /** stops taking jobs and resolves once running ones have settled (BullMQ worker.close) */
  close(): Promise<void>;
  lifecycle: BuildLifecycle;
  graceSeconds: number;
  logger: Logger;
  exit?: (code: number) => void;
}

/**
 * SIGTERM/SIGINT: stop taking jobs, let running builds finish within the grace period,
 * then abort them; aborted builds go back to the queue (not failed) for another worker.
 */
export function installGracefulShutdown(options: ShutdownOptions): void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let closing = false;
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.on(signal, () => {
      if (closing) return;
      closing = true;
      const { lifecycle, logger, graceSeconds } = options;
      logger.info({ signal, running: lifecycle.runningCount, graceSeconds }, "shutting down: finishing running builds");
      const grace = setTimeout(() => {
        logger.warn({ running: lifecycle.runningCount }, "grace period over: aborting and requeueing running builds");
        lifecycle.abortAll(new BuildAborted("shutdown", "worker shutting down"));
      }, graceSeconds * 1000);
      options
        .close()
        .then(() => exit(0))
        .catch((error: Error) => {
          logger.error({ err: error }, "shutdown failed");
          exit(1);
        })
        .finally(() => clearTimeout(grace));
    });
  }
}
