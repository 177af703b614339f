import { BuilderError, type BuildConfig, type PushedImage } from "@m1l0/config";
import type { BuildStore, LastImageStore } from "@m1l0/queue";
import type { RegistryResolver } from "@m1l0/registry";
import type { Catalog } from "@m1l0/catalog";
import type { GitCredential, SourcePolicy } from "@m1l0/source";
import type { S3Client } from "@m1l0/storage";
import type { Logger } from "pino";
import type { ArtifactArchiver } from "./artifacts.js";
import type { BuildNotifier } from "@m1l0/webhooks";
import type { ImageBuilder } from "./builder.js";
import type { BuildEgress } from "./egress/index.js";
import { phaseLogs, type Attempt } from "./phases/attempt.js";
import { fetchPhase, sourceFetch, withWorkDir } from "./phases/fetch.js";
import { identify } from "./phases/identify.js";
import { ImportCheck } from "./phases/check.js";
import { buildPhase, cachePull, pushPhase, targetImage } from "./phases/image.js";
import { planPhase } from "./phases/plan.js";

export { GENERATED_DOCKERFILE } from "./phases/plan.js";

export interface PipelineDeps {
  store: BuildStore;
  builder: ImageBuilder;
  /** labels every image this worker makes carries (the image cache's ownership label); the pipeline puts them on */
  imageLabels: Readonly<Record<string, string>>;
  registry: Record<BuildConfig["service"], RegistryResolver | undefined>;
  catalog: Catalog;
  sourcePolicy: SourcePolicy;
  gitCredentials: GitCredential[];
  s3?: S3Client;
  workDir: string;
  workerId: string;
  /** the egress policy (BUILD_EGRESS): network mode, build args and the log line of each build */
  egress: BuildEgress;
  buildMemoryBytes?: number;
  buildCpuQuota?: number;
  /** registries a user-supplied Dockerfile may pull from (ALLOWED_BASE_REGISTRIES); unset → docker.io only */
  allowedBaseRegistries?: string[];
  logger: Logger;
  /** archives the context, log and record (S3 or a local folder); absent → nothing archived */
  artifacts?: ArtifactArchiver;
  /** told when a build ends (the completion webhooks); absent without WEBHOOKS_FILE */
  notifier: BuildNotifier;
  /** last pushed image per repository, for cache-from across workers; absent → no registry cache */
  lastImages?: Pick<LastImageStore, "get" | "set">;
  /** registry hosts reached over plain HTTP besides loopback ones (the daemon's insecure-registries) */
  plainHttpRegistries?: readonly string[];
  /** one-line "deb …" sources apt.txt installs from instead of the base image's (BUILD_APT_SOURCES); unset → the image's */
  aptSources?: readonly string[];
  /** false turns skip-if-unchanged off: every build builds and pushes */
  skipUnchanged?: boolean;
  /** how long a build may hold its build key before another build with the same key may go ahead */
  buildKeyClaimMs?: number;
  /** the import check before push (IMPORT_CHECK; phases/check.ts); absent → no check */
  importCheck?: { timeoutMs: number };
}

/**
 * How one attempt ended, for finishBuild to record. runBuild itself returns only the two
 * successful ones; failures are thrown and turned into outcomes by the processor
 * (worker.ts), which knows the attempt count and why the signal was aborted.
 */
export type BuildOutcome =
  | { kind: "succeeded"; image: PushedImage }
  | { kind: "cached"; image: PushedImage; buildKey: string; commit?: string }
  /** final: no retry (attempt: a failed attempt with none left or not retryable; timeout; stalled: the job stalled too often) */
  | { kind: "failed"; error: BuilderError; cause: "attempt" | "timeout" | "stalled" }
  | { kind: "cancelled"; when: "before-start" | "running" }
  /** back to `queued`: a retryable failure with attempts left, or this worker shutting down */
  | { kind: "requeued"; why: "retry"; error: BuilderError }
  | { kind: "requeued"; why: "shutdown" }
  /** this worker's job lock lapsed: another worker owns the build now, its record is left alone */
  | { kind: "lost"; message: string };

/**
 * One attempt at one build, as its phases: identify (build key; cached?) → fetch → plan
 * (generated or user Dockerfile) → build → import check → push. Each phase reports its status and log lines
 * through the store; the terminal state is recorded by finishBuild (finish.ts). `attemptNumber` is
 * this attempt's number (1 for the first), recorded on the record with `fetching`.
 */
export async function runBuild(deps: PipelineDeps, buildId: string, config: BuildConfig, signal?: AbortSignal, attemptNumber = 1): Promise<Extract<BuildOutcome, { kind: "succeeded" | "cached" }>> {
  const { store } = deps;
  const logger = deps.logger.child({ buildId });
  // the attempt count is written with the status: the pickup's own write
  await store.transition(buildId, "fetching", { worker: deps.workerId, attempts: attemptNumber });
  const attempt: Attempt = { deps, buildId, config, target: await resolveTarget(deps, config), signal, logger, log: phaseLogs(deps, buildId, logger) };

  return withWorkDir(attempt, async (workDir) => {
    // both start while identify runs once the target tag is known absent (the answer cannot be `cached`), else after it
    const source = sourceFetch(attempt, workDir);
    const cache = cachePull(attempt);
    const dropAll = (why: string) => Promise.all([source.drop(why), cache.drop(why)]);
    const identity = await identify(attempt, {
      tagAbsent: () => {
        source.start();
        cache.start();
      },
    }).catch(async (error: unknown) => {
      await dropAll("the build key lookup failed");
      throw error;
    });
    if (identity.cached && identity.key) {
      await dropAll("the target already holds this build");
      const { buildKey, commit } = identity.key;
      return { kind: "cached" as const, buildKey, ...(commit ? { commit } : {}), image: targetImage(attempt, identity.cached.digest) };
    }
    try {
      cache.start();
      const fetched = await fetchPhase(attempt, source, identity);
      const plan = await planPhase(attempt, fetched);
      await store.transition(buildId, "building", {
        ...(fetched.commit ? { commit: fetched.commit } : {}),
        ...(plan.baseImage ? { baseImage: plan.baseImage } : {}),
        ...(plan.layouts ? { layouts: plan.layouts } : {}),
        ...(fetched.buildKey ? { buildKey: fetched.buildKey } : {}),
      });
      // with a generated Dockerfile the check starts on the step whose files are final, alongside the label step
      const check = new ImportCheck(attempt, plan);
      await buildPhase(attempt, fetched, plan, cache, check.onStepImage).catch(async (error: unknown) => {
        await check.drop("the build failed");
        throw error;
      });
      await check.finish(attempt.target.reference);
      // the target is recorded before the push so gRPC Build can answer `imagename: <ref>` as soon as the build phase ends
      await store.transition(buildId, "pushing", { image: targetImage(attempt) });
      const { digest } = await pushPhase(attempt);
      return { kind: "succeeded" as const, image: targetImage(attempt, digest) };
    } finally {
      // a failed fetch or plan leaves the cache pull running: stop it (no-op once it has been used)
      await cache.drop("the build ended before it needed the cache image");
      await identity.release();
    }
  });
}

async function resolveTarget(deps: PipelineDeps, config: BuildConfig) {
  const resolver = deps.registry[config.service];
  if (!resolver) {
    throw new BuilderError("VALIDATION_FAILED", `service "${config.service}" is not configured on this worker`, {
      issues: [{ field: "service", message: "is not configured on this worker" }],
    });
  }
  return resolver.resolve(config);
}
