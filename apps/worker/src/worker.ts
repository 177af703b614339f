import { loadCatalog } from "@m1l0/catalog";
import { BuilderError, isBuilderError } from "@m1l0/config";
import { BUILD_QUEUE_NAME, BuildStore, LastImageStore, buildJobSchema, createRedis, type BuildJobData } from "@m1l0/queue";
import { DockerHubResolver, EcrResolver, OciRegistryResolver, withRegistryOverride } from "@m1l0/registry";
import { createArtifactStore, createS3Client, type ArtifactStore } from "@m1l0/storage";
import { UnrecoverableError, Worker, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { Server } from "node:http";
import type { Logger } from "pino";
import { ArtifactArchiver } from "./artifacts.js";
import { allowedBaseRegistries } from "./base-images.js";
import { ImageCache, imageCacheLabels, sweepWorkDir, withImageCache } from "./cleanup.js";
import { DockerImageBuilder, type ImageBuilder } from "./docker.js";
import type { WorkerEnv } from "./env.js";
import { BuildAborted, BuildLifecycle, abortReason } from "./lifecycle.js";
import { WorkerMetrics, startMetricsServer } from "./metrics.js";
import { runBuild, type PipelineDeps } from "./pipeline.js";

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
  /** removes work dirs crashed builds left behind (run once at start) */
  sweepWorkDir(): Promise<string[]>;
  close(): Promise<void>;
}

/** S3 when S3_BUCKET is set, otherwise the local ARTIFACTS_DIR (same layout either way). */
export function createWorkerArtifactStore(env: WorkerEnv): ArtifactStore {
  return createArtifactStore({
    ...(env.S3_BUCKET ? { bucket: env.S3_BUCKET } : {}),
    s3: { region: env.S3_REGION, ...(env.S3_ENDPOINT ? { endpoint: env.S3_ENDPOINT } : {}), forcePathStyle: env.S3_FORCE_PATH_STYLE },
    localDir: env.ARTIFACTS_DIR,
  });
}

export function createPipelineDeps(env: WorkerEnv, store: BuildStore, logger: Logger, builder?: ImageBuilder, metrics?: WorkerMetrics, lastImages?: LastImageStore): PipelineDeps {
  const catalog = loadCatalog({
    ...(env.CATALOG_FILE ? { catalogFile: env.CATALOG_FILE } : {}),
    ...(env.CATALOG_OVERRIDES_FILE ? { overridesFile: env.CATALOG_OVERRIDES_FILE } : {}),
  });
  return {
    store,
    builder: builder ?? new DockerImageBuilder({ socketPath: env.DOCKER_SOCKET, pidsLimit: env.BUILD_PIDS_LIMIT, cgroupRoot: env.BUILD_CGROUP_ROOT }),
    registry: createRegistryResolvers(env),
    catalog,
    sourcePolicy: {
      allowHttp: env.ALLOW_HTTP_SOURCES,
      allowDir: env.ALLOW_DIR_SOURCES,
      ...(env.DIR_SOURCE_ROOTS ? { dirRoots: env.DIR_SOURCE_ROOTS.split(",").filter(Boolean) } : {}),
      allowPrivateHosts: env.ALLOW_PRIVATE_SOURCE_HOSTS,
      hostAllowlist: env.SOURCE_HOST_ALLOWLIST.split(",").map((entry) => entry.trim()).filter(Boolean),
      cloneTimeoutMs: env.CLONE_TIMEOUT_SECONDS * 1000,
      cloneMaxBytes: env.CLONE_MAX_BYTES,
      cloneMaxCheckoutBytes: env.CLONE_MAX_CHECKOUT_BYTES,
      cloneMaxCheckoutFiles: env.CLONE_MAX_CHECKOUT_FILES,
    },
    gitCredentials: env.gitCredentials,
    s3: createS3Client({
      region: env.S3_REGION,
      ...(env.S3_ENDPOINT ? { endpoint: env.S3_ENDPOINT } : {}),
      forcePathStyle: env.S3_FORCE_PATH_STYLE,
    }),
    workDir: env.WORK_DIR,
    workerId: env.WORKER_ID,
    buildNetwork: env.BUILD_NETWORK,
    skipUnchanged: env.SKIP_UNCHANGED,
    plainHttpRegistries: env.INSECURE_REGISTRIES.split(",").map((host) => host.trim().toLowerCase()).filter(Boolean),
    buildKeyClaimMs: (env.BUILD_TIMEOUT_MAX_SECONDS + 300) * 1000,
    ...(env.BUILD_MEMORY_MB ? { buildMemoryBytes: env.BUILD_MEMORY_MB * 1024 * 1024 } : {}),
    ...(env.BUILD_CPUS ? { buildCpuQuota: Math.round(env.BUILD_CPUS * 100_000) } : {}),
    allowedBaseRegistries: allowedBaseRegistries(env.ALLOWED_BASE_REGISTRIES, catalog),
    logger,
    ...(lastImages && env.CACHE_FROM_REGISTRY ? { lastImages } : {}),
    artifacts: new ArtifactArchiver({
      artifacts: createWorkerArtifactStore(env),
      builds: store,
      spoolDir: env.WORK_DIR,
      logger,
      ...(metrics ? { onUploadError: (kind) => metrics.artifactUploadErrors.inc({ artifact: kind }) } : {}),
    }),
  };
}

/** One resolver per service for the worker's lifetime, so ECR tokens are shared by its builds. */
function createRegistryResolvers(env: WorkerEnv): PipelineDeps["registry"] {
  const dockerHub = new DockerHubResolver({
    registryHost: env.DOCKERHUB_REGISTRY,
    ...(env.DOCKERHUB_USERNAME ? { username: env.DOCKERHUB_USERNAME } : {}),
    ...(env.dockerHubToken ? { token: env.dockerHubToken } : {}),
  });
  const ociRegistries = new OciRegistryResolver({ allowlist: env.registryAllowlist, credentials: env.registryCredentials });
  const ecrRegion = env.ECR_REGION || env.AWS_REGION;
  return {
    dockerhub: withRegistryOverride(dockerHub, ociRegistries),
    // without a region ECR is off here: builds fail with "service ecr is not configured on this worker"
    ecr: ecrRegion
      ? new EcrResolver({
          region: ecrRegion,
          ...(env.ECR_ENDPOINT ? { endpoint: env.ECR_ENDPOINT } : {}),
          tokenRefreshMarginMs: env.ECR_TOKEN_REFRESH_MARGIN_SECONDS * 1000,
          imageTagMutability: env.ECR_TAG_MUTABILITY,
          scanOnPush: env.ECR_SCAN_ON_PUSH,
        })
      : undefined,
  };
}

/** Wraps the pipeline in BullMQ semantics: permanent failures are unrecoverable, others retry. */
export function createBuildProcessor(deps: PipelineDeps, metrics?: WorkerMetrics, lifecycle?: BuildLifecycle) {
  return async (job: Job<BuildJobData>, token?: string) => {
    metrics?.activeBuilds.inc();
    try {
      return await processBuild(deps, job, metrics, lifecycle, token);
    } finally {
      metrics?.activeBuilds.dec();
    }
  };
}

async function processBuild(deps: PipelineDeps, job: Job<BuildJobData>, metrics?: WorkerMetrics, lifecycle?: BuildLifecycle, token?: string) {
  const { buildId, config } = buildJobSchema.parse(job.data);
  const log = deps.logger.child({ buildId, attempt: job.attemptsMade + 1 });
  log.info({ jobId: job.id }, "processing");
  const before = await deps.store.update(buildId, (record) => ({ ...record, attempts: job.attemptsMade + 1 }));
  if (before.status !== "queued" && before.worker && before.worker !== deps.workerId) {
    // the job's lock lapsed on another worker (killed, or cut off from Redis): take it over
    await deps.store.appendLog(buildId, "fetch", `worker ${before.worker} stopped responding during ${before.status}; resuming on ${deps.workerId}`);
  }
  if (lifecycle && (await lifecycle.cancelledBeforeStart(buildId))) {
    await deps.store.transitionIfActive(buildId, "cancelled");
    throw new UnrecoverableError("cancelled before it started");
  }
  const supervision = lifecycle?.supervise(buildId, config);
  try {
    const record = await runBuild(deps, buildId, config, supervision?.signal);
    log.info({ image: record.image?.reference }, "build succeeded");
    metrics?.observeFinished(record);
    // after the terminal status, so the archived log ends with it; never awaited: S3 must not hold up the job
    deps.artifacts?.archiveBuild(buildId);
    return { image: record.image };
  } catch (error) {
    const aborted = abortReason(supervision?.signal);
    if (aborted && lifecycle) {
      try {
        return await lifecycle.settleAborted(job, token, buildId, aborted);
      } finally {
        if (aborted.kind !== "shutdown" && aborted.kind !== "lost") deps.artifacts?.archiveBuild(buildId);
      }
    }
    const failure = isBuilderError(error)
      ? error
      : new BuilderError("INTERNAL", `internal error: ${(error as Error).message ?? String(error)}`, { cause: error });
    const attemptsLeft = (job.opts.attempts ?? 1) - (job.attemptsMade + 1);
    const willRetry = failure.retryable && attemptsLeft > 0;
    log.warn({ code: failure.code, willRetry }, failure.message);
    metrics?.observeFailedAttempt(failure.code);
    await deps.store.recordAttemptError(buildId, { attempt: job.attemptsMade + 1, code: failure.code, message: failure.message, at: new Date().toISOString() });
    await deps.store.appendLog(buildId, "build", `${willRetry ? "attempt failed, will retry" : "build failed"}: ${failure.message}`);
    if (willRetry) {
      await deps.store.transition(buildId, "queued", { error: { code: failure.code, message: failure.message } });
      throw failure;
    }
    const failed = await deps.store.transition(buildId, "failed", { error: { code: failure.code, message: failure.message } });
    metrics?.observeFinished(failed);
    deps.artifacts?.archiveBuild(buildId);
    throw new UnrecoverableError(failure.message);
  } finally {
    supervision?.dispose();
  }
}

export function createBuildWorker(env: WorkerEnv, logger: Logger, options: { builder?: ImageBuilder; connection?: Redis } = {}): BuildWorker {
  const connection = options.connection ?? createRedis(env.REDIS_URL, "worker");
  connection.on("error", (error) => logger.warn({ err: error }, "redis connection error"));
  const store = new BuildStore(connection, env.REDIS_KEY_PREFIX);
  const metrics = new WorkerMetrics(env.WORKER_ID);
  let imageCache: ImageCache | undefined;
  let builder = options.builder;
  if (!builder) {
    const docker = new DockerImageBuilder({
      socketPath: env.DOCKER_SOCKET,
      pidsLimit: env.BUILD_PIDS_LIMIT,
      cgroupRoot: env.BUILD_CGROUP_ROOT,
      pushRetries: env.PUSH_RETRIES,
      pushRetryDelayMs: env.PUSH_RETRY_DELAY_MS,
      labels: imageCacheLabels(env.IMAGE_CACHE_SCOPE),
    });
    imageCache = new ImageCache(
      docker.docker,
      { scope: env.IMAGE_CACHE_SCOPE, maxImages: env.IMAGE_CACHE_MAX_IMAGES, maxBytes: env.IMAGE_CACHE_MAX_BYTES, danglingMinAgeSeconds: env.IMAGE_CACHE_DANGLING_MIN_AGE_SECONDS },
      logger.child({ component: "image-cache" }),
    );
    builder = withImageCache(docker, imageCache);
  }
  const deps = createPipelineDeps(env, store, logger, builder, metrics, new LastImageStore(connection, env.REDIS_KEY_PREFIX));
  const metricsServer: Server | undefined = env.METRICS_PORT
    ? startMetricsServer(metrics, env.METRICS_PORT, env.METRICS_HOST, (error) => logger.error({ err: error }, "metrics listener failed"))
    : undefined;
  const queueName = env.BUILD_QUEUE_NAME ?? BUILD_QUEUE_NAME;
  const lifecycle = new BuildLifecycle(store, { queueName, defaultTimeoutSeconds: env.BUILD_TIMEOUT_SECONDS, maxTimeoutSeconds: env.BUILD_TIMEOUT_MAX_SECONDS }, logger);
  // the record's cancel flag (polled while building) covers messages sent before this subscribes
  void lifecycle.listen(connection).catch((error: Error) => logger.error({ err: error }, "cannot subscribe to cancel requests"));
  const collectImages = () => void imageCache?.collect().catch((error: Error) => logger.warn({ err: error }, "image cache collection failed"));
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
      void deps.store
        .transitionIfActive(buildId, "failed", { error: { code: "INTERNAL", message } })
        .then((record) => record && deps.artifacts?.archiveBuild(buildId))
        .catch((cause: Error) => logger.warn({ err: cause, buildId }, "could not record a stalled build's failure"));
    }
  });
  const sweep = () =>
    sweepWorkDir({
      workDir: env.WORK_DIR,
      getRecord: (buildId) => store.get(buildId),
      isHeld: async (buildId) => (await connection.exists(`${worker.toKey(buildId)}:lock`)) === 1,
      logger,
    });
  collectImages();
  return {
    worker,
    connection,
    deps,
    metrics,
    lifecycle,
    ...(imageCache ? { imageCache } : {}),
    sweepWorkDir: sweep,
    async close() {
      await worker.close();
      await lifecycle.close();
      // give background uploads a moment; what is left stays "pending" in the records
      await deps.artifacts?.close();
      metricsServer?.close();
      if (!options.connection) connection.disconnect();
    },
  };
}
