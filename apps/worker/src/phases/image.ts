import type { PushedImage } from "@m1l0/config";
import { packContext } from "@m1l0/context";
import { prepareCacheFrom, rememberPushedImage } from "../cache-from.js";
import { withSignal, type Attempt } from "./attempt.js";
import type { Fetched } from "./fetch.js";
import type { Plan } from "./plan.js";
import { Prefetch } from "./prefetch.js";

/** The target as the record names it (a digest only once pushed). */
export function targetImage(attempt: Attempt, digest?: string): PushedImage {
  const { registry, repository, tag, reference } = attempt.target;
  return { registry, repository, tag, reference, ...(digest ? { digest } : {}) };
}

/** The image this build may reuse layers from, pulled if this daemon lacks it; a Prefetch so the pull overlaps the fetch. */
export function cachePull(attempt: Attempt): Prefetch<string | undefined> {
  const buildLog = (line: string) => void attempt.log.build(line);
  return new Prefetch((signal) => prepareCacheFrom(attempt.deps, attempt.target, buildLog, signal), attempt.signal);
}

/** Streams the packed context to the daemon and builds the image, tagged as the target. */
export async function buildPhase(attempt: Attempt, fetched: Fetched, plan: Plan, cache: Prefetch<string | undefined>, onStepImage: (step: number, imageId: string) => void): Promise<{ imageId: string }> {
  const { deps, buildId, target, signal } = attempt;
  const buildLog = (line: string) => void attempt.log.build(line);
  // checked (and repaired) right before the daemon is asked: a build never runs on a network whose rules are gone
  const egress = await deps.egress.prepare();
  buildLog(egress.description);
  const cacheFrom = await cache.result();
  // the archive is tapped from what Docker is sent, so it is exactly the context that was built
  const capture = deps.artifacts?.captureContext(buildId);
  const packed = packContext(fetched.root, { filter: fetched.filter, extraFiles: plan.extraFiles, ...(capture ? { tap: capture.tap } : {}) });
  const { imageId } = await deps.builder
    .build({
      context: packed,
      tag: target.reference,
      dockerfile: plan.dockerfile,
      networkMode: egress.networkMode,
      ...("buildArgs" in egress && egress.buildArgs ? { buildArgs: egress.buildArgs } : {}),
      ...(plan.labels ? { labels: plan.labels } : {}),
      ...(deps.buildMemoryBytes ? { memoryBytes: deps.buildMemoryBytes } : {}),
      ...(deps.buildCpuQuota ? { cpuQuota: deps.buildCpuQuota } : {}),
      ...(cacheFrom ? { cacheFrom: [cacheFrom] } : {}),
      ...withSignal(signal),
      onLine: buildLog,
      onStepImage,
    })
    .finally(() => capture?.finish());
  await attempt.log.build(`built image ${imageId} tagged ${target.reference}`);
  return { imageId };
}

/** Pushes the target tag; afterwards it is the image later builds of the repository reuse layers from. */
export async function pushPhase(attempt: Attempt): Promise<{ digest: string }> {
  const { deps, target, signal } = attempt;
  await attempt.log.push(`pushing ${target.reference}`);
  // read right before the push: a short-lived token (ECR) from resolve may have expired during the build
  const auth = await target.auth();
  const { digest } = await deps.builder.push({
    reference: target.reference,
    registry: target.registry,
    ...(auth ? { auth } : {}),
    ...withSignal(signal),
    onLine: (line) => void attempt.log.push(line),
  });
  await attempt.log.push(`pushed ${target.reference}@${digest}`);
  await rememberPushedImage(deps, target, (error) => attempt.logger.warn({ err: error }, "cannot record the last pushed image"));
  return { digest };
}
