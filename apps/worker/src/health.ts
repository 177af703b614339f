import { writeFile } from "node:fs/promises";
import type { Logger } from "pino";

export interface HealthBeatOptions {
  file: string;
  intervalMs: number;
  /** each resolves when its dependency answers (Redis PING, the daemon's /_ping) */
  checks: Array<() => Promise<unknown>>;
  logger: Logger;
}

/**
 * The worker has no HTTP surface (several of them share a host's network), so its container
 * HEALTHCHECK reads a file instead: rewritten with the time whenever Redis and the Docker
 * daemon both answer. A stale file means the worker is wedged or cut off from either.
 */
export function startHealthBeat(options: HealthBeatOptions): () => void {
  let stopped = false;
  const beat = async () => {
    try {
      await Promise.all(options.checks.map((check) => check()));
      if (!stopped) await writeFile(options.file, `${new Date().toISOString()}\n`);
    } catch (error) {
      options.logger.warn({ err: error }, "health check failed (health file not refreshed)");
    }
  };
  void beat();
  const timer = setInterval(() => void beat(), options.intervalMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
