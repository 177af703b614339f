import { BuilderError, formatBytes, isInside } from "@m1l0/config";
import fs from "node:fs";
import { readdir, readlink, realpath, rm, stat } from "node:fs/promises";
import path from "node:path";
import { clone, currentBranch, fetch as gitFetch, readCommit, resolveRef, type GitAuth, type GitProgressEvent } from "isomorphic-git";
import { DEFAULT_CLONE_LIMITS, type FetchSourceOptions, type FetchedSource } from "../types.js";
import { checkoutCappedFs, checkoutTooLarge } from "./caps.js";
import { checkoutCommit, fetchedObjects, packObjects } from "./checkout.js";
import { isFinal, toBuilderError } from "./errors.js";
import { ObjectTooLargeError, PackReader } from "./pack.js";
import { FULL_SHA, openSession } from "./session.js";
import { fetchShallow } from "./shallow-fetch.js";

/** How long a stopped clone may take to unwind (its requests are aborted) before we return anyway. */
const SETTLE_MS = 5_000;

function progressLogger(log: (line: string) => void): { onProgress: (event: GitProgressEvent) => void; flush: () => void } {
  let current: GitProgressEvent | undefined;
  const flush = () => {
    if (!current) return;
    const { phase, loaded, total } = current;
    log(total ? `${phase}: ${loaded}/${total}` : `${phase}: ${loaded}`);
    current = undefined;
  };
  return {
    onProgress: (event) => {
      if (current && current.phase !== event.phase) flush();
      current = event;
    },
    flush,
  };
}

async function emptyDir(dir: string): Promise<void> {
  for (const entry of await readdir(dir)) await rm(path.join(dir, entry), { recursive: true, force: true });
}

async function hasCommit(dir: string, cache: object, oid: string): Promise<boolean> {
  try {
    await readCommit({ fs, dir, oid, cache });
    return true;
  } catch {
    return false;
  }
}

/** Log lines naming removed links, at most; the rest are counted. */
const MAX_LINK_LINES = 20;

/**
 * Removes symlinks whose target (judged on the link text, never followed) leaves the checkout:
 * a repository's `main.py -> /etc/passwd` must never let any later step read the worker's files.
 */
async function dropEscapingLinks(root: string, log: (line: string) => void): Promise<void> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  let dropped = 0;
  for (const entry of entries) {
    if (!entry.isSymbolicLink()) continue;
    const linkPath = path.join(entry.parentPath, entry.name);
    const target = await readlink(linkPath);
    if (!path.isAbsolute(target) && isInside(root, path.resolve(path.dirname(linkPath), target))) continue;
    await rm(linkPath, { force: true });
    dropped += 1;
    if (dropped <= MAX_LINK_LINES) log(`removed symlink ${path.relative(root, linkPath)}: it points outside the repository`);
  }
  if (dropped > MAX_LINK_LINES) log(`removed ${dropped - MAX_LINK_LINES} more symlinks pointing outside the repository`);
}

/**
 * Clones a git repository over http(s) into `options.workDir`. A branch, tag or the default
 * branch comes by our own depth-1 fetch (shallow-fetch.ts: the pack streamed to disk and
 * indexed natively) when the server offers one, else by isomorphic-git's full clone; a full
 * commit sha by isomorphic-git: a shallow fetch of the sha first (most smart-HTTP servers serve
 * reachable commits), else the default branch's full history, else every branch and tag.
 * `.git` is removed after the commit is checked out.
 */
export async function fetchGit(options: FetchSourceOptions): Promise<FetchedSource> {
  const timeoutMs = options.policy.cloneTimeoutMs ?? DEFAULT_CLONE_LIMITS.timeoutMs;
  const session = await openSession({
    source: options.source,
    policy: options.policy,
    gitCredentials: options.gitCredentials,
    signal: options.signal,
    workDir: options.workDir,
    onLog: options.onLog,
    timeoutMs,
    maxBytes: options.policy.cloneMaxBytes ?? DEFAULT_CLONE_LIMITS.maxBytes,
    onTimeout: (shown, seconds) =>
      new BuilderError("SOURCE_FETCH_FAILED", `clone of ${shown} timed out after ${seconds} s (the worker's CLONE_TIMEOUT_SECONDS)`, { retryable: false }),
  });
  const { ctx, parsed, http, onAuth, stop } = session;
  const shown = ctx.shown;
  const onAuthFailure = (): GitAuth => ({ cancel: true });
  const progress = progressLogger(ctx.log);
  const cache = {};
  const maxCheckoutBytes = options.policy.cloneMaxCheckoutBytes ?? DEFAULT_CLONE_LIMITS.maxCheckoutBytes;
  const maxCheckoutFiles = options.policy.cloneMaxCheckoutFiles ?? DEFAULT_CLONE_LIMITS.maxCheckoutFiles;
  const gitFs = checkoutCappedFs(ctx, { maxBytes: maxCheckoutBytes, maxFiles: maxCheckoutFiles }, stop);
  const common = { fs: gitFs, http, dir: ctx.dir, url: parsed.url, cache, onAuth, onAuthFailure, onProgress: progress.onProgress };

  ctx.log(`cloning ${shown} (${parsed.ref ? `ref ${parsed.ref}` : "default branch"})`);
  const tooLarge = (error: unknown): never => {
    if (!(error instanceof ObjectTooLargeError)) throw error;
    const failure = checkoutTooLarge(ctx, `${formatBytes(maxCheckoutBytes)} (the worker's CLONE_MAX_CHECKOUT_BYTES): one file inflates to ${formatBytes(error.size)}`);
    stop(failure);
    throw failure;
  };
  /** Our own depth-1 fetch of a named ref or the default branch; undefined when the server cannot serve one. */
  const shallow = async (): Promise<{ commit: string; ref: string | undefined } | undefined> => {
    const fetched = await fetchShallow(session, { limit: maxCheckoutBytes, onProgress: progress.onProgress }).catch(tooLarge);
    if (!fetched) return undefined;
    try {
      progress.flush();
      await checkoutCommit({ gitFs, dir: ctx.dir, objects: packObjects(fetched.reader), commit: fetched.commit, onProgress: progress.onProgress }).catch(tooLarge);
      progress.flush();
    } finally {
      await fetched.reader.close();
    }
    return { commit: fetched.commit, ref: fetched.ref };
  };
  const work = async (): Promise<{ commit: string; ref: string | undefined }> => {
    const fullSha = parsed.ref !== undefined && FULL_SHA.test(parsed.ref);
    if (!fullSha) {
      const done = await shallow();
      if (done) return done;
      progress.flush();
      ctx.log("the server does not offer a shallow fetch over side-band; cloning with isomorphic-git");
      await emptyDir(ctx.dir);
    }
    let commit: string;
    let ref: string | undefined = parsed.ref;
    if (fullSha && parsed.ref !== undefined) {
      const sha = parsed.ref.toLowerCase();
      let found = false;
      try {
        await clone({ ...common, ref: sha, singleBranch: true, depth: 1, noTags: true, noCheckout: true });
        found = await hasCommit(ctx.dir, cache, sha);
      } catch (error) {
        if (isFinal(ctx, error)) throw error;
      }
      if (!found) {
        progress.flush();
        ctx.log(`the server did not serve commit ${sha} directly; fetching the default branch's history`);
        await emptyDir(ctx.dir);
        await clone({ ...common, singleBranch: true, noTags: true, noCheckout: true });
        found = await hasCommit(ctx.dir, cache, sha);
        if (!found) {
          progress.flush();
          ctx.log(`commit ${sha} is not on the default branch; fetching all branches and tags`);
          await gitFetch({ ...common, singleBranch: false, tags: true });
          found = await hasCommit(ctx.dir, cache, sha);
        }
        if (!found) throw new BuilderError("SOURCE_NOT_FOUND", `commit ${sha} not found in ${shown}`);
      }
      commit = sha;
    } else {
      // isomorphic-git quirk: with noTags, a tag ref is fetched but never written locally, and the
      // checkout then fails with "Could not find origin/<tag>". Keep tags when a ref is named.
      const refOptions = parsed.ref === undefined ? { noTags: true } : { ref: parsed.ref, noTags: false };
      await clone({ ...common, ...refOptions, singleBranch: true, noCheckout: true });
      try {
        commit = await resolveRef({ fs, dir: ctx.dir, ref: "HEAD" });
      } catch (error) {
        throw new BuilderError("SOURCE_NOT_FOUND", `${shown} has no commits`, { cause: error });
      }
    }
    progress.flush();
    const pack = await PackReader.open(path.join(ctx.dir, ".git"));
    try {
      await checkoutCommit({ gitFs, dir: ctx.dir, objects: fetchedObjects({ gitFs, dir: ctx.dir, cache, pack }), commit, onProgress: progress.onProgress });
    } finally {
      await pack.close();
    }
    progress.flush();
    ref ??= (await currentBranch({ fs, dir: ctx.dir })) ?? undefined;
    return { commit, ref };
  };
  let commit: string;
  let ref: string | undefined;
  try {
    const working = work();
    try {
      // isomorphic-git's local work (unpacking, checkout) does not watch the signal: stop waiting for it
      ({ commit, ref } = await session.race(working));
    } catch (error) {
      // isomorphic-git cleans up after a failure: let it finish so nothing lands in workDir after we return
      await Promise.race([working.then(undefined, () => undefined), new Promise((resolve) => setTimeout(resolve, SETTLE_MS).unref())]);
      throw error;
    }
  } catch (error) {
    // a checkout stopped by its cap leaves nothing behind
    if (ctx.failure?.code === "SOURCE_TOO_LARGE") await emptyDir(ctx.dir).catch(() => undefined);
    throw toBuilderError(ctx, error);
  } finally {
    session.close();
  }
  ctx.log(`resolved commit ${commit}${ref && ref !== commit ? ` (${ref})` : ""}`);
  // The history is never useful in an image, and it is the largest part of a checkout.
  await rm(path.join(ctx.dir, ".git"), { recursive: true, force: true });

  let root = ctx.dir;
  if (parsed.subdir !== undefined) {
    const at = ref ?? commit.slice(0, 12);
    const notFound = (why: string) => new BuilderError("SOURCE_NOT_FOUND", `subdirectory '${parsed.subdir}' ${why} in ${shown} at ${at}`);
    let real: string;
    try {
      real = await realpath(path.join(ctx.dir, parsed.subdir));
    } catch {
      throw notFound("not found");
    }
    const realRoot = await realpath(ctx.dir);
    if (!isInside(realRoot, real)) throw notFound("is a symlink leading outside the repository");
    if (!(await stat(real)).isDirectory()) throw notFound("is not a directory");
    root = path.join(ctx.dir, path.relative(realRoot, real));
  }
  await dropEscapingLinks(ctx.dir, ctx.log);
  const result: FetchedSource = { kind: "git", root, commit };
  if (ref !== undefined) result.ref = ref;
  return result;
}

