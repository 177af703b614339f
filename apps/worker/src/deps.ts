import { catalogFromEnv } from "@m1l0/catalog";
import { splitList } from "@m1l0/config";
import type { BuildStore, LastImageStore, PendingUploads } from "@m1l0/queue";
import { DockerHubResolver, EcrResolver, OciRegistryResolver, withRegistryOverride } from "@m1l0/registry";
import { artifactStoreFromEnv, createS3Client } from "@m1l0/storage";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { ArtifactArchiver } from "./artifacts.js";
import { allowedBaseRegistries } from "./base-images.js";
import type { BuildNotifier } from "@m1l0/webhooks";
import type { ImageBuilder } from "./builder.js";
import type { BuildEgress } from "./egress/index.js";
import { imageCacheLabels } from "./cleanup.js";
import type { WorkerEnv } from "./env.js";
import type { WorkerMetrics } from "./metrics.js";
import type { PipelineDeps } from "./pipeline.js";

export function createPipelineDeps(
  env: WorkerEnv,
  store: BuildStore,
  logger: Logger,
  builder: ImageBuilder,
  egress: BuildEgress,
  uploads: PendingUploads,
  notifier: BuildNotifier,
  metrics?: WorkerMetrics,
  lastImages?: LastImageStore,
): PipelineDeps {
  const catalog = catalogFromEnv(env);
  return {
    store,
    builder,
    notifier,
    imageLabels: imageCacheLabels(env.IMAGE_CACHE_SCOPE),
    registry: createRegistryResolvers(env),
    catalog,
    sourcePolicy: {
      allowHttp: env.ALLOW_HTTP_SOURCES,
      allowDir: env.ALLOW_DIR_SOURCES,
      ...(env.DIR_SOURCE_ROOTS.length ? { dirRoots: env.DIR_SOURCE_ROOTS } : {}),
      allowPrivateHosts: env.ALLOW_PRIVATE_SOURCE_HOSTS,
      hostAllowlist: env.SOURCE_HOST_ALLOWLIST,
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
    egress,
    skipUnchanged: env.SKIP_UNCHANGED,
    ...(env.IMPORT_CHECK ? { importCheck: { timeoutMs: env.IMPORT_CHECK_TIMEOUT_SECONDS * 1000 } } : {}),
    plainHttpRegistries: splitList(env.INSECURE_REGISTRIES).map((host) => host.toLowerCase()),
    buildKeyClaimMs: (env.BUILD_TIMEOUT_MAX_SECONDS + 300) * 1000,
    ...(env.BUILD_MEMORY_MB ? { buildMemoryBytes: env.BUILD_MEMORY_MB * 1024 * 1024 } : {}),
    ...(env.BUILD_CPUS ? { buildCpuQuota: Math.round(env.BUILD_CPUS * 100_000) } : {}),
    allowedBaseRegistries: allowedBaseRegistries(env.ALLOWED_BASE_REGISTRIES, catalog),
    aptSources: env.BUILD_APT_SOURCES,
    logger,
    ...(lastImages && env.CACHE_FROM_REGISTRY ? { lastImages } : {}),
    artifacts: new ArtifactArchiver({
      artifacts: artifactStoreFromEnv(env),
      builds: store,
      uploads,
      workerId: env.WORKER_ID,
      host: hostname(),
      spoolDir: env.WORK_DIR,
      logPartBytes: env.LOG_PART_BYTES,
      leaseMs: env.ARTIFACT_LEASE_MS,
      sweepIntervalMs: env.ARTIFACT_SWEEP_INTERVAL_MS,
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

