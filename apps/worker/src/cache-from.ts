import type { LastImageStore } from "@m1l0/queue";
import type { PushTarget } from "@m1l0/registry";
import type { ImageBuilder } from "./builder.js";

export interface CacheFromDeps {
  builder: ImageBuilder;
  /** absent → no registry cache (CACHE_FROM_REGISTRY=false) */
  lastImages?: Pick<LastImageStore, "get" | "set">;
}

/**
 * The image a build may reuse layers from: the last image pushed to the same repository (by any
 * worker). Pulled first when this daemon does not hold it, with the worker's credentials for the
 * target; not used when this daemon built it (the local build cache has its layers). Never fails
 * a build: a missing record, a failed lookup or a failed pull builds without it.
 */
export async function prepareCacheFrom(
  deps: CacheFromDeps,
  target: PushTarget,
  onLine: (line: string) => void,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const { builder, lastImages } = deps;
  if (!lastImages) return undefined;
  let reference: string | undefined;
  try {
    reference = await lastImages.get(target.registry, target.repository);
    if (!reference) return undefined;
    const origin = (await builder.inspect(reference))?.origin ?? "absent";
    if (origin === "built") {
      // Its layers are in this daemon's own build cache already. Passing it as cachefrom would
      // make the classic builder accept only its ancestors from that cache (other local hits,
      // e.g. another branch's dependencies, would be refused).
      onLine(`local build cache (the last image ${reference} was built here)`);
      return undefined;
    }
    if (origin === "absent") {
      const started = Date.now();
      const auth = await target.auth();
      await builder.pull({ reference, ...(auth ? { auth } : {}), ...(signal ? { signal } : {}) });
      onLine(`pulled ${reference} for its layers in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    }
  } catch (error) {
    if (signal?.aborted) throw error;
    onLine(`no registry cache: ${reference ? `${reference} is unavailable` : "the last image lookup failed"} (${(error as Error).message}); building without it`);
    return undefined;
  }
  onLine(`cache from ${reference}`);
  return reference;
}

/** After a successful push: this image is now the one later builds of the repository reuse. */
export async function rememberPushedImage(deps: CacheFromDeps, target: PushTarget, onError: (error: unknown) => void): Promise<void> {
  try {
    await deps.lastImages?.set(target.registry, target.repository, target.reference);
  } catch (error) {
    onError(error);
  }
}
