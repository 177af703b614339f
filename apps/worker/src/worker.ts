import { loadCatalog } from "@m1l0/catalog";
import { BuilderError, isBuilderError } from "@m1l0/config";
import { BUILD_QUEUE_NAME, BuildStore, buildJobSchema, createRedis, type BuildJobData } from "@m1l0/queue";
import { DockerHubResolver } from "@m1l0/registry";
import { createS3Client } from "@m1l0/storage";
import { UnrecoverableError, Worker, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { DockerImageBuilder, type ImageBuilder } from "./docker.js";
import type { WorkerEnv } from "./env.js";
import { runBuild, type PipelineDeps } from "./pipeline.js";

export interface BuildWorker {
  worker: Worker<BuildJobData>;
  deps: PipelineDeps;
  close(): Promise<void>;
}

export function createPipelineDeps(env: WorkerEnv, store: BuildStore, logger: Logger, builder?: ImageBuilder): PipelineDeps {
  const catalog = loadCatalog({
    ...(env.CATALOG_FILE ? { catalogFile: env.CATALOG_FILE } : {}),
    ...(env.CATALOG_OVERRIDES_FILE ? { overridesFile: env.CATALOG_OVERRIDES_FILE } : {}),
  });
  return {
    store,
    builder: builder ?? new DockerImageBuilder({ socketPath: env.DOCKER_SOCKET }),
    registry: {
      dockerhub: new DockerHubResolver({
        registryHost: env.DOCKERHUB_REGISTRY,
        ...(env.DOCKERHUB_USERNAME ? { username: env.DOCKERHUB_USERNAME } : {}),
        ...(env.dockerHubToken ? { token: env.dockerHubToken } : {}),
      }),
      ecr: undefined,
    },
    catalog,
    sourcePolicy: {
      allowHttp: env.ALLOW_HTTP_SOURCES,
      allowDir: env.ALLOW_DIR_SOURCES,
      ...(env.DIR_SOURCE_ROOTS ? { dirRoots: env.DIR_SOURCE_ROOTS.split(",").filter(Boolean) } : {}),
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
    ...(env.BUILD_MEMORY_MB ? { buildMemoryBytes: env.BUILD_MEMORY_MB * 1024 * 1024 } : {}),
    ...(env.BUILD_CPUS ? { buildCpuQuota: Math.round(env.BUILD_CPUS * 100_000) } : {}),
    logger,
  };
}

/** Wraps the pipeline in BullMQ semantics: permanent failures are unrecoverable, others retry. */
export function createBuildProcessor(deps: PipelineDeps) {
  return async (job: Job<BuildJobData>) => {
    const { buildId, config } = buildJobSchema.parse(job.data);
    const log = deps.logger.child({ buildId, attempt: job.attemptsMade + 1 });
    await deps.store.update(buildId, (record) => ({ ...record, attempts: job.attemptsMade + 1 }));
    try {
      const record = await runBuild(deps, buildId, config);
      log.info({ image: record.image?.reference }, "build succeeded");
      return { image: record.image };
    } catch (error) {
      const failure = isBuilderError(error)
        ? error
        : new BuilderError("INTERNAL", `internal error: ${(error as Error).message ?? String(error)}`, { cause: error });
      const attemptsLeft = (job.opts.attempts ?? 1) - (job.attemptsMade + 1);
      const willRetry = failure.retryable && attemptsLeft > 0;
      log.warn({ code: failure.code, willRetry }, failure.message);
      await deps.store.appendLog(buildId, "build", `${willRetry ? "attempt failed, will retry" : "build failed"}: ${failure.message}`);
      if (willRetry) {
        await deps.store.transition(buildId, "queued", { error: { code: failure.code, message: failure.message } });
        throw failure;
      }
      await deps.store.transition(buildId, "failed", { error: { code: failure.code, message: failure.message } });
      throw new UnrecoverableError(failure.message);
    }
  };
}

export function createBuildWorker(env: WorkerEnv, logger: Logger, options: { builder?: ImageBuilder; connection?: Redis } = {}): BuildWorker {
  const connection = options.connection ?? createRedis(env.REDIS_URL, "worker");
  const store = new BuildStore(connection);
  const deps = createPipelineDeps(env, store, logger, options.builder);
  const worker = new Worker<BuildJobData>(env.BUILD_QUEUE_NAME ?? BUILD_QUEUE_NAME, createBuildProcessor(deps), {
    connection,
    concurrency: env.WORKER_CONCURRENCY,
    // builds run for minutes: a generous lock, renewed by BullMQ while the event loop stays free
    lockDuration: 60_000,
    stalledInterval: 30_000,
    maxStalledCount: 2,
  });
  worker.on("error", (error) => logger.error({ err: error }, "worker error"));
  worker.on("failed", (job, error) => logger.debug({ jobId: job?.id, err: error.message }, "job failed"));
  return {
    worker,
    deps,
    async close() {
      await worker.close();
      if (!options.connection) connection.disconnect();
    },
  };
}
