import fs from "node:fs";
import { readdir, realpath, rm, stat } from "node:fs/promises";
import path from "node:path";
import { BuilderError } from "@m1l0/config";
import { Errors, checkout, clone, currentBranch, fetch as gitFetch, readCommit, resolveRef, type GitAuth, type GitProgressEvent, type HttpClient } from "isomorphic-git";
import nodeHttp from "isomorphic-git/http/node";
import { describeSource, parseGitSource } from "./describe.js";
import type { FetchSourceOptions, FetchedSource, GitCredential } from "./types.js";

/** Idle-socket timeout for each request to the git server. */
const HTTP_TIMEOUT_MS = 120_000;
const FULL_SHA = /^[0-9a-f]{40}$/i;
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "ENETDOWN",
  "EAI_AGAIN",
  "ENOTFOUND",
  "EPIPE",
  "ECONNABORTED",
]);

function normaliseHost(host: string): string {
  return host
    .trim()
    .toLowerCase()
    .replace(/^[a-z][a-z0-9+.-]*:\/\//, "")
    .replace(/\/.*$/, "");
}

/** The credential for the URL's host: `host` matches `host` or `host:port` (explicit or the scheme's default port). */
export function credentialFor(credentials: readonly GitCredential[] | undefined, url: URL): GitCredential | undefined {
  if (!credentials?.length) return undefined;
  const hostname = url.hostname.toLowerCase();
  const port = url.port || (url.protocol === "https:" ? "443" : url.protocol === "http:" ? "80" : "");
  const candidates = new Set([url.host.toLowerCase(), `${hostname}:${port}`]);
  return credentials.find((credential) => candidates.has(normaliseHost(credential.host)));
}

interface Context {
  options: FetchSourceOptions;
  dir: string;
  url: string;
  shown: string;
  host: string;
  ref: string | undefined;
  credential: GitCredential | undefined;
  authSent: boolean;
  log: (line: string) => void;
  redact: (text: string) => string;
}

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

function isNetworkError(error: unknown): boolean {
  const code = errorCode(error);
  if (code && (NETWORK_CODES.has(code) || code.startsWith("UND_ERR"))) return true;
  const message = error instanceof Error ? error.message : "";
  return /Request timed out|socket hang up|^aborted$/i.test(message);
}

function authError(ctx: Context, cause: unknown): BuilderError {
  const message = ctx.authSent
    ? `authentication failed for ${ctx.host}: the worker's token for this host was rejected (check it is valid and can read the repository)`
    : `authentication failed for ${ctx.host}: set a token for this host on the worker`;
  return new BuilderError("SOURCE_AUTH_FAILED", message, { cause: scrubbed(ctx, cause) });
}

/** The original error with any token removed from its message, kept as `cause` for debugging. */
function scrubbed(ctx: Context, error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const clean = new Error(ctx.redact(error.message));
  clean.name = error.name;
  const code = errorCode(error);
  if (code) (clean as NodeJS.ErrnoException).code = code;
  return clean;
}

function toBuilderError(ctx: Context, error: unknown): unknown {
  const signal = ctx.options.signal;
  if (signal?.aborted) return signal.reason ?? error;
  if (error instanceof BuilderError) return error;
  const code = errorCode(error);
  const message = ctx.redact(error instanceof Error ? error.message : String(error));

  if (code === Errors.UserCanceledError.code) return authError(ctx, error);
  if (code === Errors.HttpError.code) {
    const status = (error as { data?: { statusCode?: number } }).data?.statusCode ?? 0;
    if (status === 401 || status === 403) return authError(ctx, error);
    if (status === 404 || status === 410) {
      const hint = ctx.credential ? "" : ` (if it is private, set a token for ${ctx.host} on the worker)`;
      return new BuilderError("SOURCE_NOT_FOUND", `repository ${ctx.shown} not found${hint}`, { cause: scrubbed(ctx, error) });
    }
    const retryable = status === 408 || status === 429 || status >= 500;
    return new BuilderError("SOURCE_FETCH_FAILED", `git server ${ctx.host} answered HTTP ${status} for ${ctx.shown}`, {
      cause: scrubbed(ctx, error),
      retryable,
    });
  }
  if (code === Errors.NotFoundError.code && ctx.ref !== undefined) {
    const what = String((error as { data?: { what?: unknown } }).data?.what ?? "");
    if (what === ctx.ref || what.endsWith(`/${ctx.ref}`)) {
      return new BuilderError("SOURCE_NOT_FOUND", `ref '${ctx.ref}' not found in ${ctx.shown}: no branch or tag of that name`, {
        cause: scrubbed(ctx, error),
      });
    }
  }
  if (code === Errors.SmartHttpError.code) {
    return new BuilderError("SOURCE_NOT_FOUND", `${ctx.shown} is not a git repository (the server did not answer with the git smart HTTP protocol)`, {
      cause: scrubbed(ctx, error),
    });
  }
  if (isNetworkError(error)) {
    return new BuilderError("SOURCE_FETCH_FAILED", `could not reach git server ${ctx.host}: ${message}`, { cause: scrubbed(ctx, error), retryable: true });
  }
  if (/certificate|self[- ]signed|CERT_|SSL|TLS/i.test(`${code ?? ""} ${message}`)) {
    return new BuilderError("SOURCE_FETCH_FAILED", `TLS error talking to ${ctx.host}: ${message}`, { cause: scrubbed(ctx, error), retryable: false });
  }
  return new BuilderError("SOURCE_FETCH_FAILED", `git fetch of ${ctx.shown} failed: ${message}`, { cause: scrubbed(ctx, error), retryable: true });
}

/** Errors after which a different fetch strategy cannot help. */
function isFinal(ctx: Context, error: unknown): boolean {
  if (ctx.options.signal?.aborted) return true;
  const code = errorCode(error);
  return code === Errors.UserCanceledError.code || code === Errors.HttpError.code || code === Errors.SmartHttpError.code || isNetworkError(error);
}

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

function isInside(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel));
}

/**
 * Clones a git repository over http(s) into `options.workDir` with isomorphic-git: shallow and
 * single-branch for a branch or tag; for a full commit sha, a shallow fetch of the sha first
 * (most smart-HTTP servers serve reachable commits), else the default branch's full history,
 * else every branch and tag. `.git` is removed after the commit is resolved.
 */
export async function fetchGit(options: FetchSourceOptions): Promise<FetchedSource> {
  const parsed = parseGitSource(options.source);
  const url = new URL(parsed.url);
  const shown = describeSource(parsed.url);
  if (url.protocol === "http:" && !options.policy.allowHttp) {
    throw new BuilderError("SOURCE_NOT_ALLOWED", "http sources are disabled; use https or ask the operator to set ALLOW_HTTP_SOURCES");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new BuilderError("SOURCE_NOT_ALLOWED", `unsupported git URL scheme ${url.protocol.replace(/:$/, "")}: use https://host/repo.git`);
  }
  options.signal?.throwIfAborted();

  const credential = credentialFor(options.gitCredentials, url);
  const tokens = (options.gitCredentials ?? []).map((c) => c.token).filter((token) => token.length > 0);
  const ctx: Context = {
    options,
    dir: path.resolve(options.workDir),
    url: parsed.url,
    shown,
    host: url.host,
    ref: parsed.ref,
    credential,
    authSent: false,
    log: (line) => options.onLog?.(tokens.reduce((text, token) => text.split(token).join("***"), line)),
    redact: (text) => tokens.reduce((acc, token) => acc.split(token).join("***"), text),
  };

  const http: HttpClient = {
    request: (request) =>
      nodeHttp.request({
        ...request,
        signal: request.signal ?? options.signal,
        fetchOptions: { ...(request.fetchOptions as object | undefined), timeout: HTTP_TIMEOUT_MS },
      }),
  };
  // Credentials only for the source's own host, only when the server asks (401), and only once:
  // a rejected token cancels instead of looping.
  const onAuth = (authUrl: string): GitAuth => {
    let matches: GitCredential | undefined;
    try {
      matches = credential && credentialFor([credential], new URL(authUrl));
    } catch {
      matches = undefined;
    }
    if (!matches) return { cancel: true };
    ctx.authSent = true;
    return { username: matches.username, password: matches.token };
  };
  const onAuthFailure = (): GitAuth => ({ cancel: true });
  const progress = progressLogger(ctx.log);
  const cache = {};
  const common = { fs, http, dir: ctx.dir, url: parsed.url, cache, onAuth, onAuthFailure, onProgress: progress.onProgress };

  ctx.log(`cloning ${shown} (${parsed.ref ? `ref ${parsed.ref}` : "default branch"})`);
  let commit: string;
  let ref: string | undefined = parsed.ref;
  try {
    if (parsed.ref !== undefined && FULL_SHA.test(parsed.ref)) {
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
      await checkout({ fs, dir: ctx.dir, cache, ref: sha, force: true, onProgress: progress.onProgress });
    } else {
      // isomorphic-git quirk: with noTags, a tag ref is fetched but never written locally, and the
      // checkout then fails with "Could not find origin/<tag>". Keep tags when a ref is named.
      const refOptions = parsed.ref === undefined ? { noTags: true } : { ref: parsed.ref, noTags: false };
      try {
        await clone({ ...common, ...refOptions, singleBranch: true, depth: 1 });
      } catch (error) {
        if (errorCode(error) !== Errors.RemoteCapabilityError.code) throw error;
        progress.flush();
        ctx.log("the server does not support shallow clones; fetching full history");
        await emptyDir(ctx.dir);
        await clone({ ...common, ...refOptions, singleBranch: true });
      }
    }
    progress.flush();
    try {
      commit = await resolveRef({ fs, dir: ctx.dir, ref: "HEAD" });
    } catch (error) {
      throw new BuilderError("SOURCE_NOT_FOUND", `${shown} has no commits`, { cause: error });
    }
    ref ??= (await currentBranch({ fs, dir: ctx.dir })) ?? undefined;
  } catch (error) {
    throw toBuilderError(ctx, error);
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
  const result: FetchedSource = { kind: "git", root, commit };
  if (ref !== undefined) result.ref = ref;
  return result;
}
