import { createHash } from "node:crypto";
import { canonicalJson, isTerminal, type BuildConfig } from "@m1l0/config";
import { GENERATOR_VERSION } from "@m1l0/dockerfile";
import type { BuildStore } from "@m1l0/queue";
import { ImageLookupError, isLoopbackRegistry, lookupRemoteImage, type PushTarget, type RemoteImage } from "@m1l0/registry";

/** The image label that carries a build's key; compared with the registry's copy before building. */
export const BUILD_KEY_LABEL = "ai.m1l0.build-key";
/** Version of the key's recipe: bump when what goes into it changes. */
const BUILD_KEY_VERSION = 1;

export interface BuildKeyInputs {
  config: BuildConfig;
  /** the exact source content: `git:<commit>` or `s3:<bucket>/<key>:<etag>` */
  source: string;
  /** generated Dockerfiles: the catalog base image and its content id on this daemon (absent when not present locally) */
  base: { image: string; content: string | undefined; aptSources?: readonly string[] } | undefined;
}


/**
 * sha256 over everything that shapes the image: the source content, every config field but
 * the time limit (the target is part of it too: the key is compared at the target tag), the
 * Dockerfile generator's version, the base image's content and the operator's apt sources.
 */
export function computeBuildKey(inputs: BuildKeyInputs): string {
  const { timeout: _timeout, ...shaping } = inputs.config;
  const material = canonicalJson({
    v: BUILD_KEY_VERSION,
    generator: GENERATOR_VERSION,
    source: inputs.source,
    config: shaping,
    // the operator's apt sources (BUILD_APT_SOURCES) shape the apt.txt layer; absent when unset, so earlier keys stay valid
    base: inputs.base ? { image: inputs.base.image, content: inputs.base.content ?? null, ...(inputs.base.aptSources?.length ? { aptSources: inputs.base.aptSources } : {}) } : null,
  });
  return `sha256:${createHash("sha256").update(material).digest("hex")}`;
}

export interface CachedImageLookup {
  target: PushTarget;
  plainHttpRegistries: readonly string[];
  log: (line: string) => void;
  signal?: AbortSignal;
}

/**
 * The image the target tag holds now; undefined when the tag is absent or the registry cannot
 * tell (then the build simply runs). Needs no build key, so it can run while the key is worked out.
 */
export async function readTargetImage(lookup: CachedImageLookup): Promise<RemoteImage | undefined> {
  const { target } = lookup;
  try {
    const auth = await target.auth();
    return await lookupRemoteImage(target, {
      ...(auth ? { auth } : {}),
      plainHttp: isLoopbackRegistry(target.registry) || lookup.plainHttpRegistries.includes(target.registry.toLowerCase()),
      ...(lookup.signal ? { signal: lookup.signal } : {}),
    });
  } catch (error) {
    if (lookup.signal?.aborted) throw lookup.signal.reason ?? error;
    if (!(error instanceof ImageLookupError)) throw error;
    lookup.log(`could not check ${target.reference} for an identical image (${error.message}); building`);
    return undefined;
  }
}

/** `remote` when it was built with this key; otherwise undefined (and a log line if the tag holds another build). */
export function matchBuildKey(lookup: CachedImageLookup, remote: RemoteImage | undefined, buildKey: string): RemoteImage | undefined {
  if (!remote) return undefined;
  if (remote.labels[BUILD_KEY_LABEL] === buildKey) return remote;
  lookup.log(`${lookup.target.reference} exists but was built from something else; building`);
  return undefined;
}

/** The image at the target tag when it was built with this key (readTargetImage, then matchBuildKey). */
export async function findCachedImage(lookup: CachedImageLookup, buildKey: string): Promise<RemoteImage | undefined> {
  return matchBuildKey(lookup, await readTargetImage(lookup), buildKey);
}

/** Waits until build `holder` has finished, is gone, or no longer holds the key (e.g. it failed and awaits a retry). */
export async function waitForBuildKey(store: BuildStore, buildKey: string, holder: string, signal?: AbortSignal, pollMs = 250): Promise<void> {
  for (;;) {
    signal?.throwIfAborted();
    const record = await store.get(holder);
    if (!record || isTerminal(record.status)) return;
    if ((await store.buildKeyHolder(buildKey)) !== holder) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(resolve, pollMs);
      signal?.addEventListener(
        "abort",
        () => {
          clearTimeout(timer);
          reject(signal.reason);
        },
        { once: true },
      );
    });
  }
}
