import { BuilderError } from "@m1l0/config";
import { BUILD_QUEUE_NAME, BuildStore, LastImageStore, PendingUploads, createRedis, type BuildJobData } from "@m1l0/queue";
import { Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Server } from "node:http";
import type { Logger } from "pino";
import type { ImageBuilder } from "./builder.js";
import { ImageCache, sweepWorkDir, withImageCache } from "./cleanup.js";
import { createPipelineDeps } from "./deps.js";
import { DockerImageBuilder } from "./docker.js";
import { FixedNetworkEgress, createBuildEgress, type BuildEgress, type DockerBuildEgress } from "./egress/index.js";
import type { WorkerEnv } from "./env.js";
import { NO_WEBHOOKS, WebhookDeliveryStore, WebhookMetrics, WebhookNotifier, startWebhookDeliveryWorker, webhookQueueName, type WebhookSettings } from "@m1l0/webhooks";
import { finishBuild } from "./finish.js";
import { BuildAborted, BuildLifecycle } from "./lifecycle.js";
import { WorkerMetrics, startMetricsServer } from "./metrics.js";
import type { PipelineDeps } from "./pipeline.js";
import { createBuildProcessor } from "./processor.js";
import { JobProgress } from "./progress.js";

export { createPipelineDeps } from "./deps.js";
export { createBuildProcessor } from "./processor.js";

export interface BuildWorker {
  worker: Worker<BuildJobData>;
  /** the Redis connection the worker and its store use (health checks ping it) */
  connection: Redis;
  deps: PipelineDeps;
  metrics: WorkerMetrics;
  /** running builds' abort controllers: cancel, timeout, shutdown */
  lifecycle: BuildLifecycle;
  /** this worker's bounded image cache; absent when a builder was passed in (tests) */
  imageCache?: ImageCache;
  /** the build network and its egress rules; absent when a builder was passed in (tests) */
  egress?: DockerBuildEgress;
  /** removes work dirs crashed builds left behind (run once at start) */
  sweepWorkDir(): Promise<string[]>;
  close(): Promise<void>;
}


/**
 * Completion webhooks: this worker enqueues them as its builds end and, like every worker,
 * delivers from the shared webhook queue (so deliveries go on while any worker lives).
 */
function startWebhooks(settings: WebhookSettings, connection: Redis, buildQueueName: string, prefix: string, metrics: WorkerMetrics, logger: Logger) {
  const history = new WebhookDeliveryStore(connection, prefix);
  const queueName = webhookQueueName(buildQueueName);
  const notifier = new WebhookNotifier(connection, queueName, settings, history);
  const delivery = startWebhookDeliveryWorker({ connection, queueName, settings, history, metrics: new WebhookMetrics(metrics.registry), logger: logger.child({ component: "webhooks" }) });
  logger.info({ endpoints: settings.endpoints.map((endpoint) => ({ name: endpoint.name, origin: endpoint.url.origin, events: [...endpoint.events] })), attempts: settings.attempts }, "completion webhooks on");
  return {
    notifier,
    async close() {
      await delivery.close();
      await notifier.close();
    },
  };
}

export function createBuildWorker(env: WorkerEnv, logger: Logger, options: { builder?: ImageBuilder; connection?: Redis } = {}): BuildWorker {
  const connection = options.connection ?? createRedis(env.REDIS_URL, "worker");
  connection.on("error", (error) => logger.warn({ err: error }, "redis connection error"));
  const store = new BuildStore(connection, env.REDIS_KEY_PREFIX, { logTailEvents: env.LOG_TAIL_EVENTS, logLineMaxBytes: env.LOG_LINE_MAX_BYTES });
  const uploads = new PendingUploads(connection, env.REDIS_KEY_PREFIX);
  const metrics = new WorkerMetrics(env.WORKER_ID);
  let imageCache: ImageCache | undefined;
  let egress: DockerBuildEgress | undefined;
  let buildEgress: BuildEgress = new FixedNetworkEgress(env.BUILD_NETWORK);
  let builder = options.builder;
  if (!builder) {
    const docker = new DockerImageBuilder({
      socketPath: env.DOCKER_SOCKET,
      pidsLimit: env.BUILD_PIDS_LIMIT,
      cgroupRoot: env.BUILD_CGROUP_ROOT,
      pushRetries: env.PUSH_RETRIES,
      pushRetryDelayMs: env.PUSH_RETRY_DELAY_MS,
    });
    imageCache = new ImageCache(
      docker.docker,
      { scope: env.IMAGE_CACHE_SCOPE, maxImages: env.IMAGE_CACHE_MAX_IMAGES, maxBytes: env.IMAGE_CACHE_MAX_BYTES, danglingMinAgeSeconds: env.IMAGE_CACHE_DANGLING_MIN_AGE_SECONDS },
      logger.child({ component: "image-cache" }),
      docker.calls,
    );
    builder = withImageCache(docker, imageCache);
    egress = createBuildEgress(env, docker.docker, logger);
    buildEgress = egress;
  }
  const queueName = env.BUILD_QUEUE_NAME ?? BUILD_QUEUE_NAME;
  const webhooks = env.webhooks ? startWebhooks(env.webhooks, connection, queueName, env.REDIS_KEY_PREFIX, metrics, logger) : undefined;
  const deps = createPipelineDeps(env, store, logger, builder, buildEgress, uploads, webhooks?.notifier ?? NO_WEBHOOKS, metrics, new LastImageStore(connection, env.REDIS_KEY_PREFIX));
  const metricsServer: Server | undefined = env.METRICS_PORT
    ? startMetricsServer(metrics, env.METRICS_PORT, env.METRICS_HOST, (error) => logger.error({ err: error }, "metrics listener failed"))
    : undefined;
  const lifecycle = new BuildLifecycle(store, { queueName, defaultTimeoutSeconds: env.BUILD_TIMEOUT_SECONDS, maxTimeoutSeconds: env.BUILD_TIMEOUT_MAX_SECONDS }, logger);
  // the record's cancel flag (polled while building) covers messages sent before this subscribes
  void lifecycle.listen(connection).catch((error: Error) => logger.error({ err: error }, "cannot subscribe to cancel requests"));
  const collectFailed = (error: Error) => logger.warn({ err: error }, "image cache collection failed");
  // after a job only when it changed the daemon's images (or a dangling one is due): listing them is not free
  const collectImages = () => void imageCache?.collectIfChanged()?.catch(collectFailed);
  const processJob = createBuildProcessor(deps, metrics, lifecycle);
  const worker = new Worker<BuildJobData>(
    queueName,
    async (job, token) => {
      try {
        return await processJob(job, token);
      } finally {
        collectImages();
      }
    },
    {
      connection,
      concurrency: env.WORKER_CONCURRENCY,
      // builds run for minutes: the lock is renewed every lockDuration/2 while the event loop
      // stays free (packing and hashing stream in chunks); a killed worker's build is taken
      // over by another worker within about lockDuration + stalledInterval
      lockDuration: env.WORKER_LOCK_DURATION_MS,
      stalledInterval: env.WORKER_STALLED_INTERVAL_MS,
      maxStalledCount: env.WORKER_MAX_STALLED_COUNT,
    },
  );
  worker.on("error", (error) => logger.error({ err: error }, "worker error"));
  // a lock that could not be renewed is gone: the job is (or soon will be) another worker's, so
  // stop this copy rather than build, push and answer twice
  worker.on("lockRenewalFailed", (jobIds) => {
    for (const jobId of jobIds) lifecycle.abort(jobId, new BuildAborted("lost", "its lock could not be renewed"));
  });
  worker.on("stalled", (jobId) => logger.warn({ jobId }, "job stalled (its worker stopped renewing the lock): requeued"));
  worker.on("failed", (job, error) => {
    logger.debug({ jobId: job?.id, err: error.message }, "job failed");
    // a job that stalled more than WORKER_MAX_STALLED_COUNT times is failed by BullMQ without
    // reaching the processor: give its record the final answer the processor would have
    if (job && /stalled more than allowable limit/.test(error.message)) {
      const { buildId } = job.data;
      const message = `the build's worker stopped responding ${env.WORKER_MAX_STALLED_COUNT + 1} times (killed or cut off from Redis); not retried further`;
      const progress = new JobProgress(job, buildId, env.WORKER_ID, logger);
      void finishBuild(
        { store, buildId, attempt: job.attemptsMade, logger, ...(deps.artifacts ? { artifacts: deps.artifacts } : {}), notifier: deps.notifier, onSettled: (status) => progress.report(status) },
        { kind: "failed", cause: "stalled", error: new BuilderError("INTERNAL", message) },
      )
        .catch((cause: Error) => logger.warn({ err: cause, buildId }, "could not record a stalled build's failure"));
    }
  });
  const sweep = () =>
    sweepWorkDir({
      workDir: env.WORK_DIR,
      getRecord: (buildId) => store.get(buildId),
      isHeld: async (buildId) => (await connection.exists(`${worker.toKey(buildId)}:lock`)) === 1,
      hasPendingUploads: (buildId) => uploads.isPending(buildId),
      logger,
    });
  collectImages();
  // finishes the uploads of builds whose worker died (any worker's), one lease at a time
  deps.artifacts?.startSweeper();
  return {
    worker,
    connection,
    deps,
    metrics,
    lifecycle,
    ...(imageCache ? { imageCache } : {}),
    ...(egress ? { egress } : {}),
    sweepWorkDir: sweep,
    async close() {
      egress?.stop();
      await worker.close();
      await webhooks?.close();
      await lifecycle.close();
      // give background uploads a moment; what is left stays "pending" in the records
      await deps.artifacts?.close();
      metricsServer?.close();
      if (!options.connection) connection.disconnect();
    },
  };
}
