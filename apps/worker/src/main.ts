#!/usr/bin/env node
import { loadWorkerEnv } from "./env.js";
import { createLogger } from "./logger.js";
import { installGracefulShutdown } from "./shutdown.js";
import { createBuildWorker } from "./worker.js";

const env = loadWorkerEnv();
const logger = createLogger(env.LOG_LEVEL, "m1l0-worker");
const { deps, close, lifecycle, sweepWorkDir } = createBuildWorker(env, logger);

await deps.builder.ping().catch((error: Error) => logger.warn(error.message));
// work dirs a crashed predecessor left behind (builds no worker holds any more)
await sweepWorkDir().catch((error: Error) => logger.warn({ err: error }, "work dir sweep failed"));
logger.info({ worker: env.WORKER_ID, concurrency: env.WORKER_CONCURRENCY }, "worker ready");

installGracefulShutdown({ close, lifecycle, graceSeconds: env.WORKER_SHUTDOWN_GRACE_SECONDS, logger });
