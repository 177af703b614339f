import { resolveBaseImage, type Catalog } from "@m1l0/catalog";
import { BuilderError, type BuildConfig, type BuildRecord } from "@m1l0/config";
import { contextHasFile, createContextFilter, packContext } from "@m1l0/context";
import { buildLabels, generateDockerfile } from "@m1l0/dockerfile";
import type { BuildStore, LastImageStore } from "@m1l0/queue";
import type { RegistryResolver } from "@m1l0/registry";
import { describeSource, fetchSource, resolveSourceIdentity, type GitCredential, type SourcePolicy } from "@m1l0/source";
import type { S3Client } from "@m1l0/storage";
import { mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import type { ArtifactArchiver } from "./artifacts.js";
import { checkDockerfileBaseImages } from "./base-images.js";
import { prepareCacheFrom, rememberPushedImage } from "./cache-from.js";
import { BUILD_KEY_LABEL, computeBuildKey, findCachedImage, waitForBuildKey } from "./build-key.js";
import type { ImageBuilder } from "./builder.js";

/** Name of the generated Dockerfile inside the context; chosen not to clash with a user's. */
export const GENERATED_DOCKERFILE = ".m1l0.Dockerfile";

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
  buildNetwork: string;
  buildMemoryBytes?: number;
  buildCpuQuota?: number;
  /** registries a user-supplied Dockerfile may pull from (ALLOWED_BASE_REGISTRIES); unset → docker.io only */
  allowedBaseRegistries?: string[];
  logger: Logger;
  /** archives the context, log and record (S3 or a local folder); absent → nothing archived */
  artifacts?: ArtifactArchiver;
  /** last pushed image per repository, for cache-from across workers; absent → no registry cache */
  lastImages?: LastImageStore;
  /** registry hosts reached over plain HTTP besides loopback ones (the daemon's insecure-registries) */
  plainHttpRegistries?: readonly string[];
  /** false turns skip-if-unchanged off: every build builds and pushes */
  skipUnchanged?: boolean;
  /** how long a build may hold its build key before another build with the same key may go ahead */
  buildKeyClaimMs?: number;
}

/**
 * One attempt at one build: fetch → filter → Dockerfile → stream context → build → push.
 * Every step reports status and log lines through the store; the caller decides what a
 * thrown error means for retries.
 */
export async function runBuild(deps: PipelineDeps, buildId: string, config: BuildConfig, signal?: AbortSignal): Promise<BuildRecord> {
  const { store, builder } = deps;
  const log = deps.logger.child({ buildId });
  await store.transition(buildId, "fetching", { worker: deps.workerId });
  const fetchLog = (line: string) => void store.appendLog(buildId, "fetch", line).catch((error) => log.warn({ err: error }, "log append failed"));
  const target = await resolveTarget(deps, config);

  // One build per identity: what the image would be made of is named before anything is
  // fetched; if the target tag already holds that image, the build is done.
  let buildKey: string | undefined;
  let keyInputs: Parameters<typeof computeBuildKey>[0] | undefined;
  let claimed = false;
  if (deps.skipUnchanged !== false) {
    const identity = await resolveSourceIdentity({
      source: config.source,
      policy: deps.sourcePolicy,
      gitCredentials: deps.gitCredentials,
      ...(deps.s3 ? { s3: { client: deps.s3 } } : {}),
      ...(signal ? { signal } : {}),
    });
    if (identity) {
      const base = config.dockerfile ? undefined : resolveCatalogBase(deps, config);
      const baseContent = base ? (await deps.builder.inspect(base.image))?.contentId : undefined;
      keyInputs = { config, source: identity.id, base: base ? { image: base.publicImage, content: baseContent } : undefined };
      buildKey = computeBuildKey(keyInputs);
      fetchLog(`build key ${buildKey} (${identity.commit ? `commit ${identity.commit}` : identity.id})`);
      const lookup = { target, plainHttpRegistries: deps.plainHttpRegistries ?? [], log: fetchLog, ...(signal ? { signal } : {}) };
      let existing = await findCachedImage(lookup, buildKey);
      while (!existing) {
        const holder = await store.claimBuildKey(buildKey, buildId, deps.buildKeyClaimMs ?? 2 * 3600_000);
        if (holder === buildId) {
          claimed = true;
          break;
        }
        fetchLog(`an identical build (${holder}) is in progress; waiting for its image instead of building it again`);
        await waitForBuildKey(store, buildKey, holder, signal);
        existing = await findCachedImage(lookup, buildKey);
      }
      if (existing) {
        fetchLog(`${target.reference} already holds this build (${existing.digest}); nothing to build or push`);
        return await store.transition(buildId, "cached", {
          buildKey,
          ...(identity.commit ? { commit: identity.commit } : {}),
          image: { registry: target.registry, repository: target.repository, tag: target.tag, reference: target.reference, digest: existing.digest },
        });
      }
    }
  }

  let workDir: string | undefined;
  try {
    workDir = await mkdtemp(path.join(deps.workDir, `m1l0-${buildId}-`));
    fetchLog(`fetching ${describeSource(config.source)}`);
    const fetched = await fetchSource({
      source: config.source,
      workDir,
      policy: deps.sourcePolicy,
      gitCredentials: deps.gitCredentials,
      ...(deps.s3 ? { s3: { client: deps.s3 } } : {}),
      onLog: fetchLog,
      ...(signal ? { signal } : {}),
    });
    if (keyInputs && fetched.commit && keyInputs.source.startsWith("git:") && keyInputs.source !== `git:${fetched.commit}`) {
      // the branch moved between the ref lookup and the clone: the image is made of what was cloned
      buildKey = computeBuildKey({ ...keyInputs, source: `git:${fetched.commit}` });
      fetchLog(`the ref moved while fetching; build key is now ${buildKey}`);
    }

    const filter = await createContextFilter(fetched.root, config.ignores);
    let dockerfileName: string;
    let extraFiles: Array<{ name: string; content: string }> = [];
    let baseImage: string | undefined;
    if (config.dockerfile) {
      if (!(await contextHasFile(fetched.root, filter, config.dockerfile))) {
        throw new BuilderError("DOCKERFILE_NOT_FOUND", `dockerfile "${config.dockerfile}" was not found in the source (or is excluded by ignores)`);
      }
      dockerfileName = config.dockerfile;
      fetchLog(`using the source's own Dockerfile ${config.dockerfile}`);
      const images = await checkDockerfileBaseImages(fetched.root, config.dockerfile, deps.allowedBaseRegistries ?? ["docker.io"]);
      fetchLog(`base images ${images.join(", ") || "(none)"}: allowed`);
    } else {
      if (!(await contextHasFile(fetched.root, filter, config.entry))) {
        throw new BuilderError("ENTRY_NOT_FOUND", `entry file "${config.entry}" was not found in the source (or is excluded by ignores); set "entry" to the script that starts your project`);
      }
      const base = resolveCatalogBase(deps, config);
      baseImage = base.image;
      const hasRequirements = await contextHasFile(fetched.root, filter, "requirements.txt");
      const labels = buildLabels({
        config,
        buildId,
        source: describeSource(config.source),
        baseImage: base.publicImage,
        ...(fetched.commit ? { commit: fetched.commit } : {}),
        ...(buildKey ? { buildKey } : {}),
      });
      dockerfileName = GENERATED_DOCKERFILE;
      extraFiles = [
        // every label (the image cache's too) rides in the Dockerfile's LABEL line: no extra build step
        { name: GENERATED_DOCKERFILE, content: generateDockerfile({ baseImage: base.image, entry: config.entry, hasRequirements, labels: { ...labels, ...deps.imageLabels } }) },
        // The user's ignores are already applied while packing. This replacement makes the
        // daemon drop our Dockerfile (and itself) from the context before `COPY . ./`.
        { name: ".dockerignore", content: `${GENERATED_DOCKERFILE}\n.dockerignore\n` },
      ];
      fetchLog(`base image ${base.publicImage}${base.image !== base.publicImage ? ` (served locally as ${base.image})` : ""}; requirements.txt ${hasRequirements ? "found" : "absent"}`);
    }

    await store.transition(buildId, "building", {
      ...(fetched.commit ? { commit: fetched.commit } : {}),
      ...(baseImage ? { baseImage } : {}),
      ...(buildKey ? { buildKey } : {}),
    });
    const buildLog = (line: string) => void store.appendLog(buildId, "build", line);
    const cacheFrom = await prepareCacheFrom(deps, target, buildLog, signal);
    const packed = packContext(fetched.root, { filter, extraFiles });
    // the archive is a tee of what Docker reads, so it is exactly the context that was built
    const contextCapture = deps.artifacts?.captureContext(buildId, packed);
    const context = contextCapture?.stream ?? packed;
    const { imageId } = await builder.build({
      context,
      tag: target.reference,
      dockerfile: dockerfileName,
      networkMode: deps.buildNetwork,
      // generated Dockerfiles carry every label in their LABEL line; a user's Dockerfile gets them from the build API (one more step)
      ...(config.dockerfile ? { labels: { ...deps.imageLabels, ...(buildKey ? { [BUILD_KEY_LABEL]: buildKey } : {}) } } : {}),
      ...(deps.buildMemoryBytes ? { memoryBytes: deps.buildMemoryBytes } : {}),
      ...(deps.buildCpuQuota ? { cpuQuota: deps.buildCpuQuota } : {}),
      ...(cacheFrom ? { cacheFrom: [cacheFrom] } : {}),
      ...(signal ? { signal } : {}),
      onLine: buildLog,
    }).finally(() => contextCapture?.finish());
    await store.appendLog(buildId, "build", `built image ${imageId} tagged ${target.reference}`);

    // the target is recorded before the push so gRPC Build can answer `imagename: <ref>` as soon as the build phase ends
    await store.transition(buildId, "pushing", {
      image: { registry: target.registry, repository: target.repository, tag: target.tag, reference: target.reference },
    });
    await store.appendLog(buildId, "push", `pushing ${target.reference}`);
    // short-lived tokens (ECR) are re-read here: the one from resolve may have expired during the build
    const pushAuth = await target.auth();
    const { digest } = await builder.push({
      reference: target.reference,
      registry: target.registry,
      ...(pushAuth ? { auth: pushAuth } : {}),
      ...(signal ? { signal } : {}),
      onLine: (line) => void store.appendLog(buildId, "push", line),
    });
    await store.appendLog(buildId, "push", `pushed ${target.reference}@${digest}`);
    await rememberPushedImage(deps, target, (error) => log.warn({ err: error }, "cannot record the last pushed image"));
    return await store.transition(buildId, "succeeded", {
      image: { registry: target.registry, repository: target.repository, tag: target.tag, reference: target.reference, digest },
    });
  } finally {
    if (workDir) await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    if (claimed && buildKey) await store.releaseBuildKey(buildKey, buildId).catch((error) => log.warn({ err: error }, "build key release failed"));
  }
}

function resolveCatalogBase(deps: PipelineDeps, config: BuildConfig) {
  return resolveBaseImage(deps.catalog, {
    framework: config.framework,
    pyversion: config.pyversion,
    resource: config.resource,
    ...(config.version ? { version: config.version } : {}),
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
