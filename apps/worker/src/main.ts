#!/usr/bin/env node
import { loadWorkerEnv } from "./env.js";
import { createLogger } from "./logger.js";
import { createBuildWorker } from "./worker.js";

const env = loadWorkerEnv();
const logger = createLogger(env.LOG_LEVEL, "m1l0-worker");
const { worker, deps, close } = createBuildWorker(env, logger);

await deps.builder.ping().catch((error: Error) => logger.warn(error.message));
logger.info({ worker: env.WORKER_ID, concurrency: env.WORKER_CONCURRENCY }, "worker ready");
void worker;

let closing = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    if (closing) return;
    closing = true;
    logger.info({ signal }, "shutting down: finishing running builds");
    close()
      .then(() => process.exit(0))
      .catch((error: Error) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      });
  });
}
