#!/usr/bin/env node
import { AWS_SECRET_VARIABLES, resolveFileVariables } from "@m1l0/config";
import { readFileSync } from "node:fs";
import { egressCommand } from "./egress/cli.js";
import { loadWorkerEnv } from "./env.js";
import { startHealthBeat } from "./health.js";
import { limitHeapGrowth } from "./heap.js";
import { createLogger } from "./logger.js";
import { installGracefulShutdown } from "./shutdown.js";
import { createBuildWorker } from "./worker.js";

// the AWS SDK's default chain reads process.env: AWS_*_FILE secrets are resolved into it
Object.assign(process.env, resolveFileVariables(process.env, AWS_SECRET_VARIABLES, (file) => readFileSync(file, "utf8")));
const env = loadWorkerEnv();
const logger = createLogger(env.LOG_LEVEL, "m1l0-worker");
const heapGrowth = limitHeapGrowth(env.WORKER_HEAP_GROWING_PERCENT);

if (process.argv[2] === "egress") {
  process.exitCode = await egressCommand(process.argv.slice(3), env, logger).catch((error: Error) => {
    console.error(error.message);
    return 1;
  });
} else {
  const { deps, close, lifecycle, sweepWorkDir, egress, connection } = createBuildWorker(env, logger);

  await deps.builder.ping().catch((error: Error) => logger.warn(error.message));
  // the build network and its rules before the first build (and again every BUILD_EGRESS_CHECK_SECONDS)
  await egress
    ?.start(env.BUILD_EGRESS_CHECK_SECONDS * 1000)
    .then((prepared) => logger.info(prepared.description))
    .catch((error: Error) => logger.error({ err: error }, "build egress policy not in place: builds fail until it is (retried periodically)"));
  // work dirs a crashed predecessor left behind (builds no worker holds any more)
  await sweepWorkDir().catch((error: Error) => logger.warn({ err: error }, "work dir sweep failed"));
  if (heapGrowth) logger.info(heapGrowth);
  logger.info({ worker: env.WORKER_ID, concurrency: env.WORKER_CONCURRENCY }, "worker ready");

  const stopHealth = env.HEALTH_FILE
    ? startHealthBeat({ file: env.HEALTH_FILE, intervalMs: env.HEALTH_INTERVAL_SECONDS * 1000, checks: [() => connection.ping(), () => deps.builder.ping()], logger })
    : () => undefined;
  const closeAll = async () => {
    stopHealth();
    await close();
  };
  installGracefulShutdown({ close: closeAll, lifecycle, graceSeconds: env.WORKER_SHUTDOWN_GRACE_SECONDS, logger });
}
