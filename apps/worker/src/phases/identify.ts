import type { BuildKeyInputs } from "../build-key.js";
import { computeBuildKey, findCachedImage, matchBuildKey, readTargetImage, waitForBuildKey, type CachedImageLookup } from "../build-key.js";
import { resolveSourceIdentity } from "@m1l0/source";
import type { RemoteImage } from "@m1l0/registry";
import { resolveCatalogBase } from "./plan.js";
import { withSignal, type Attempt } from "./attempt.js";

/** What the image would be made of, named before anything is fetched. */
export interface Identity {
  /** absent when skip-if-unchanged is off or the source cannot be named up front (a dir source) */
  key?: { buildKey: string; inputs: BuildKeyInputs; commit?: string };
  /** the target tag already holds this build: nothing to fetch, build or push */
  cached?: RemoteImage;
  /** gives up the build key claim, if this attempt holds one (idempotent, never throws) */
  release(): Promise<void>;
}

const unclaimed: Identity["release"] = async () => undefined;

export interface IdentifyHooks {
  /** the target tag holds no image (or none readable): the answer cannot be `cached`, so the fetch may start now */
  tagAbsent(): void;
}

/**
 * One build per identity: the build key is computed from the source's identity (a commit, an
 * object version) and the config; if the target tag holds an image with that key, the build is
 * done. Otherwise this attempt claims the key, or waits for the build holding it and looks again.
 */
export async function identify(attempt: Attempt, hooks: IdentifyHooks): Promise<Identity> {
  const { deps, config, buildId, signal } = attempt;
  if (deps.skipUnchanged === false || !namedUpFront(config.source)) return { release: unclaimed };
  const fetchLog = (line: string) => void attempt.log.fetch(line);
  const lookup: CachedImageLookup = { target: attempt.target, plainHttpRegistries: deps.plainHttpRegistries ?? [], log: fetchLog, ...withSignal(signal) };
  // Neither the tag's current image nor the base image's content depends on the source's
  // identity: all three lookups travel at once (an unchanged resubmit is their slowest, not their sum).
  const tagImage = readTargetImage(lookup);
  tagImage.then((image) => image ?? hooks.tagAbsent(), () => undefined); // a failure is met when awaited below
  const base = config.dockerfile ? undefined : resolveCatalogBase(deps, config);
  const [identity, baseContent] = await Promise.all([
    resolveSourceIdentity({
      source: config.source,
      policy: deps.sourcePolicy,
      gitCredentials: deps.gitCredentials,
      ...(deps.s3 ? { s3: { client: deps.s3 } } : {}),
      ...withSignal(signal),
    }),
    base ? deps.builder.contentId(base.image) : undefined,
  ]);
  if (!identity) return { release: unclaimed };
  const inputs: BuildKeyInputs = { config, source: identity.id, base: base ? { image: base.publicImage, content: baseContent, ...(deps.aptSources?.length ? { aptSources: deps.aptSources } : {}) } : undefined };
  const buildKey = computeBuildKey(inputs);
  const key = { buildKey, inputs, ...(identity.commit ? { commit: identity.commit } : {}) };
  fetchLog(`build key ${buildKey} (${identity.commit ? `commit ${identity.commit}` : identity.id})`);
  for (let existing = matchBuildKey(lookup, await tagImage, buildKey); ; existing = await findCachedImage(lookup, buildKey)) {
    if (existing) {
      fetchLog(`${attempt.target.reference} already holds this build (${existing.digest}); nothing to build or push`);
      return { key, cached: existing, release: unclaimed };
    }
    const holder = await deps.store.claimBuildKey(buildKey, buildId, deps.buildKeyClaimMs ?? 2 * 3600_000);
    if (holder === buildId) {
      const release = () => deps.store.releaseBuildKey(buildKey, buildId).catch((error: unknown) => attempt.logger.warn({ err: error }, "build key release failed"));
      return { key, release };
    }
    fetchLog(`an identical build (${holder}) is in progress; waiting for its image instead of building it again`);
    await waitForBuildKey(deps.store, buildKey, holder, signal);
  }
}

/** Sources whose content can be named before fetching (a git ref, an s3 object); a dir:// source cannot. */
function namedUpFront(source: string): boolean {
  const protocol = URL.canParse(source) ? new URL(source).protocol : "";
  return protocol === "http:" || protocol === "https:" || protocol === "s3:";
}
