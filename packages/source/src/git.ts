import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import { readdir, readlink, realpath, rm, stat } from "node:fs/promises";
import path from "node:path";
import zlib from "node:zlib";
import { AbortScope, BuilderError } from "@m1l0/config";
import {
  Errors,
  checkout,
  clone,
  currentBranch,
  fetch as gitFetch,
  listServerRefs,
  readCommit,
  resolveRef,
  type GitAuth,
  type GitHttpRequest,
  type GitHttpResponse,
  type GitProgressEvent,
  type HttpClient,
} from "isomorphic-git";
import nodeHttp from "isomorphic-git/http/node";
import { formatBytes } from "./archive.js";
import { describeSource, parseGitSource } from "./describe.js";
import { NetworkGuard } from "./network.js";
import { DEFAULT_CLONE_LIMITS, type FetchSourceOptions, type FetchedSource, type GitCredential, type SourcePolicy } from "./types.js";

/** Idle-socket timeout for each request to the git server. */
const HTTP_TIMEOUT_MS = 120_000;
/** Redirects followed per request (GitHub answers renamed repositories with one). */
const MAX_REDIRECTS = 5;
/** How long a stopped clone may take to unwind (its requests are aborted) before we return anyway. */
const SETTLE_MS = 5_000;
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
  /** why the clone was stopped by a policy or a cap; wins over whatever error isomorphic-git reports */
  failure: BuilderError | undefined;
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
  if (ctx.failure) return ctx.failure;
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
  if (ctx.options.signal?.aborted || ctx.failure) return true;
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

function checkScheme(url: URL, policy: SourcePolicy): void {
  if (url.protocol === "http:" && !policy.allowHttp) {
    throw new BuilderError("SOURCE_NOT_ALLOWED", "http sources are disabled; use https or ask the operator to set ALLOW_HTTP_SOURCES");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new BuilderError("SOURCE_NOT_ALLOWED", `unsupported git URL scheme ${url.protocol.replace(/:$/, "")}: use https://host/repo.git`);
  }
}

/** Passes a response body through, failing once the clone as a whole received more than allowed. */
async function* countedBody(body: AsyncIterableIterator<Uint8Array>, onChunk: (bytes: number) => void): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const chunk of body) {
    onChunk(chunk.byteLength);
    yield chunk;
  }
}

/**
 * isomorphic-git's Node client with the source policy applied to every request: the scheme
 * and host of each URL (redirects are followed here, one checked hop at a time), the
 * addresses actually connected to (a checking `lookup`, so DNS rebinding cannot reach a
 * refused address), and the clone's byte cap and deadline (`signal`).
 */
function guardedHttpClient(
  ctx: Context,
  guard: NetworkGuard,
  signal: AbortSignal,
  stop: (failure: BuilderError) => void,
  maxBytes: number,
): { client: HttpClient; close: () => void } {
  // Agents of this clone only: no pooled socket opened by anything else is ever reused.
  const agents = { "http:": new http.Agent({ keepAlive: true }), "https:": new https.Agent({ keepAlive: true }) };
  let received = 0;
  const count = (bytes: number) => {
    received += bytes;
    if (received > maxBytes) {
      const failure = new BuilderError(
        "SOURCE_FETCH_FAILED",
        `repository ${ctx.shown} is larger than ${formatBytes(maxBytes)} (the worker's CLONE_MAX_BYTES); use an s3 archive or a smaller repository`,
        { retryable: false },
      );
      stop(failure);
      throw failure;
    }
  };
  const request = async (first: GitHttpRequest): Promise<GitHttpResponse> => {
    let current = first;
    for (let hop = 0; ; hop++) {
      const target = new URL(current.url);
      try {
        checkScheme(target, ctx.options.policy);
        guard.checkUrlHost(target);
      } catch (error) {
        if (error instanceof BuilderError) stop(error);
        throw error;
      }
      let response: GitHttpResponse;
      try {
        response = await nodeHttp.request({
          ...current,
          agent: agents[target.protocol as "http:" | "https:"],
          signal,
          fetchOptions: { ...(current.fetchOptions as object | undefined), timeout: HTTP_TIMEOUT_MS, lookup: guard.lookup, followRedirects: false },
        });
      } catch (error) {
        if (error instanceof BuilderError) stop(error);
        throw error;
      }
      const location = response.headers?.location;
      const method = (current.method ?? "GET").toUpperCase();
      const redirected = response.statusCode >= 300 && response.statusCode < 400 && location !== undefined;
      // A GET is re-sent as is; a POST only on 307/308 (which keep the method) with a body held in memory.
      const replayable = method === "GET" || method === "HEAD" || ((response.statusCode === 307 || response.statusCode === 308) && Array.isArray(current.body));
      if (!redirected || !replayable) {
        return response.body ? { ...response, body: countedBody(response.body, count) } : response;
      }
      await response.body?.return?.();
      if (hop >= MAX_REDIRECTS) {
        const failure = new BuilderError("SOURCE_FETCH_FAILED", `git server ${ctx.host} redirected more than ${MAX_REDIRECTS} times for ${ctx.shown}`, { retryable: false });
        stop(failure);
        throw failure;
      }
      const next = new URL(location, target);
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(current.headers ?? {})) {
        // credentials belong to the origin they were given for
        if (name.toLowerCase() === "host") continue;
        if (next.origin !== target.origin && ["authorization", "cookie"].includes(name.toLowerCase())) continue;
        headers[name] = value;
      }
      ctx.log(`redirected to ${describeSource(next.href)}`);
      current = { ...current, url: next.href, headers };
    }
  };
  return {
    client: { request },
    close: () => {
      agents["http:"].destroy();
      agents["https:"].destroy();
    },
  };
}

/**
 * The filesystem isomorphic-git writes through, with the checkout counted: a small pack can
 * inflate into gigabytes (a file of zeros compresses ~1000:1), which CLONE_MAX_BYTES, counting
 * bytes on the wire, cannot see. Every working-tree write is counted before it reaches the disk;
 * the first one past a cap stops the clone (and every later write fails too).
 */
function checkoutCappedFs(ctx: Context, caps: { maxBytes: number; maxFiles: number }, stop: (failure: BuilderError) => void): typeof fs {
  const gitDir = path.join(ctx.dir, ".git") + path.sep;
  let bytes = 0;
  let files = 0;
  const tooLarge = (what: string) =>
    new BuilderError("SOURCE_TOO_LARGE", `repository ${ctx.shown} checks out to more than ${what}; use an s3 archive or a smaller repository`);
  const count = (file: unknown, size: number) => {
    if (`${path.resolve(String(file))}${path.sep}`.startsWith(gitDir)) return;
    files += 1;
    bytes += size;
    const failure =
      bytes > caps.maxBytes
        ? tooLarge(`${formatBytes(caps.maxBytes)} (the worker's CLONE_MAX_CHECKOUT_BYTES)`)
        : files > caps.maxFiles
          ? tooLarge(`${caps.maxFiles} files (the worker's CLONE_MAX_CHECKOUT_FILES)`)
          : undefined;
    if (failure) {
      stop(failure);
      throw ctx.failure ?? failure;
    }
  };
  const packDir = path.join(gitDir, "objects", "pack") + path.sep;
  const promises = {
    ...fs.promises,
    writeFile: async (file: Parameters<typeof fs.promises.writeFile>[0], data: string | NodeJS.ArrayBufferView, options?: Parameters<typeof fs.promises.writeFile>[2]) => {
      // A fetched pack is written before isomorphic-git indexes it (which inflates every object in
      // JavaScript): refuse an object that alone inflates past the cap before that work starts.
      const target = path.resolve(String(file));
      if (target.startsWith(packDir) && target.endsWith(".pack") && typeof data !== "string") {
        const largest = largestPackObject(Buffer.from(data.buffer, data.byteOffset, data.byteLength), caps.maxBytes);
        if (largest > caps.maxBytes) {
          const failure = tooLarge(`${formatBytes(caps.maxBytes)} (the worker's CLONE_MAX_CHECKOUT_BYTES): one file inflates to ${formatBytes(largest)}`);
          stop(failure);
          throw ctx.failure ?? failure;
        }
      }
      count(file, typeof data === "string" ? Buffer.byteLength(data) : data.byteLength);
      return fs.promises.writeFile(file, data, options);
    },
    symlink: async (target: string, file: string, type?: string | null) => {
      count(file, 0);
      return fs.promises.symlink(target, file, type);
    },
  };
  return { ...fs, promises } as typeof fs;
}

/**
 * Size of the largest object a git pack inflates to, reading object headers (type and size) and
 * delta headers (result size); stops at the first object larger than `limit`, before inflating it.
 * Compressed data is skipped by inflating it natively (zlib), which is what finds where it ends.
 * Returns 0 for anything it does not understand: the write-time count still applies.
 */
export function largestPackObject(pack: Buffer, limit: number): number {
  if (pack.length < 12 || pack.toString("latin1", 0, 4) !== "PACK") return 0;
  const count = pack.readUInt32BE(8);
  let position = 12;
  let largest = 0;
  try {
    for (let index = 0; index < count && position < pack.length; index++) {
      let byte = pack[position++]!;
      const type = (byte >> 4) & 7;
      let size = byte & 15;
      let shift = 4;
      while (byte & 0x80) {
        byte = pack[position++]!;
        size += (byte & 0x7f) * 2 ** shift;
        shift += 7;
      }
      if (type === 6) {
        // ofs-delta: a variable-length negative offset to the base
        do byte = pack[position++]!;
        while (byte & 0x80);
      } else if (type === 7) {
        position += 20; // ref-delta: the base's object id
      }
      // blobs are what a checkout writes (commits, trees and tags are not files)
      if (type === 3 && size > limit) return size;
      if (type === 3) largest = Math.max(largest, size);
      // never inflate more than the header announced (a lying header fails here, and is refused by git anyway)
      const { buffer, engine } = zlib.inflateSync(pack.subarray(position), { info: true, maxOutputLength: Math.max(size, 1) }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
      position += engine.bytesWritten;
      if (type === 6 || type === 7) {
        // delta data starts with the base size and the result size (little-endian base-128)
        let offset = 0;
        for (let part = 0; part < 2; part++) {
          let value = 0;
          let bits = 0;
          do {
            byte = buffer[offset++] ?? 0;
            value += (byte & 0x7f) * 2 ** bits;
            bits += 7;
          } while (byte & 0x80);
          if (part === 1) {
            if (value > limit) return value;
            largest = Math.max(largest, value);
          }
        }
      }
    }
  } catch {
    return largest;
  }
  return largest;
}

/**
 * isomorphic-git's onAuth: credentials only for the source's own host, only when the server
 * asks (401), and only once — a rejected token cancels instead of looping.
 */
function authCallback(ctx: Context): (authUrl: string) => GitAuth {
  return (authUrl) => {
    let matches: GitCredential | undefined;
    try {
      matches = ctx.credential && credentialFor([ctx.credential], new URL(authUrl));
    } catch {
      matches = undefined;
    }
    if (!matches) return { cancel: true };
    ctx.authSent = true;
    return { username: matches.username, password: matches.token };
  };
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
 * Clones a git repository over http(s) into `options.workDir` with isomorphic-git: shallow and
 * single-branch for a branch or tag; for a full commit sha, a shallow fetch of the sha first
 * (most smart-HTTP servers serve reachable commits), else the default branch's full history,
 * else every branch and tag. `.git` is removed after the commit is resolved.
 */
export async function fetchGit(options: FetchSourceOptions): Promise<FetchedSource> {
  const parsed = parseGitSource(options.source);
  const url = new URL(parsed.url);
  const shown = describeSource(parsed.url);
  checkScheme(url, options.policy);
  const guard = new NetworkGuard(options.policy);
  // Refuse before touching the disk; every request is checked again when it connects.
  guard.checkUrlHost(url);
  await guard.resolveChecked(url.hostname);
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
    failure: undefined,
    log: (line) => options.onLog?.(tokens.reduce((text, token) => text.split(token).join("***"), line)),
    redact: (text) => tokens.reduce((acc, token) => acc.split(token).join("***"), text),
  };

  const timeoutMs = options.policy.cloneTimeoutMs ?? DEFAULT_CLONE_LIMITS.timeoutMs;
  const maxBytes = options.policy.cloneMaxBytes ?? DEFAULT_CLONE_LIMITS.maxBytes;
  // the clone's deadline, its caps and the build's own signal stop it through one scope
  const scope = new AbortScope({
    timeoutMs,
    signal: options.signal,
    onTimeout: () =>
      (ctx.failure ??= new BuilderError("SOURCE_FETCH_FAILED", `clone of ${shown} timed out after ${timeoutMs / 1000} s (the worker's CLONE_TIMEOUT_SECONDS)`, {
        retryable: false,
      })),
  });
  const stop = (failure: BuilderError) => {
    ctx.failure ??= failure;
    scope.abort(ctx.failure);
  };
  const guarded = guardedHttpClient(ctx, guard, scope.signal, stop, maxBytes);
  const http = guarded.client;
  const onAuth = authCallback(ctx);
  const onAuthFailure = (): GitAuth => ({ cancel: true });
  const progress = progressLogger(ctx.log);
  const cache = {};
  const maxCheckoutBytes = options.policy.cloneMaxCheckoutBytes ?? DEFAULT_CLONE_LIMITS.maxCheckoutBytes;
  const maxCheckoutFiles = options.policy.cloneMaxCheckoutFiles ?? DEFAULT_CLONE_LIMITS.maxCheckoutFiles;
  const gitFs = checkoutCappedFs(ctx, { maxBytes: maxCheckoutBytes, maxFiles: maxCheckoutFiles }, stop);
  const common = { fs: gitFs, http, dir: ctx.dir, url: parsed.url, cache, onAuth, onAuthFailure, onProgress: progress.onProgress };

  ctx.log(`cloning ${shown} (${parsed.ref ? `ref ${parsed.ref}` : "default branch"})`);
  const work = async (): Promise<{ commit: string; ref: string | undefined }> => {
    let commit: string;
    let ref: string | undefined = parsed.ref;
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
      await checkout({ fs: gitFs, dir: ctx.dir, cache, ref: sha, force: true, onProgress: progress.onProgress });
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
    return { commit, ref };
  };
  let commit: string;
  let ref: string | undefined;
  try {
    const working = work();
    try {
      // isomorphic-git's local work (unpacking, checkout) does not watch the signal: stop waiting for it
      ({ commit, ref } = await scope.race(working));
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
    scope.dispose();
    guarded.close();
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

export interface ResolveRevisionOptions {
  source: string;
  policy: SourcePolicy;
  gitCredentials?: GitCredential[];
  signal?: AbortSignal;
  /** deadline of the ref advertisement [REF_LOOKUP_TIMEOUT_MS] */
  timeoutMs?: number;
}

/** How long a ref advertisement may take: it sits on the path of every build of a git source. */
export const REF_LOOKUP_TIMEOUT_MS = 30_000;

/**
 * The commit a git source's ref points at, asked of the server without cloning (one ref
 * advertisement, under the same host policy, redirect checks and credentials as a clone).
 * A full 40-hex revision is its own answer. Undefined when the server does not name the ref
 * (the clone then decides and reports the error).
 */
export async function resolveGitRevision(options: ResolveRevisionOptions): Promise<string | undefined> {
  const parsed = parseGitSource(options.source);
  if (parsed.ref !== undefined && FULL_SHA.test(parsed.ref)) return parsed.ref.toLowerCase();
  const url = new URL(parsed.url);
  checkScheme(url, options.policy);
  const guard = new NetworkGuard(options.policy);
  guard.checkUrlHost(url);
  await guard.resolveChecked(url.hostname);
  const credential = credentialFor(options.gitCredentials, url);
  const tokens = (options.gitCredentials ?? []).map((c) => c.token).filter((token) => token.length > 0);
  const redact = (text: string) => tokens.reduce((acc, token) => acc.split(token).join("***"), text);
  const ctx: Context = {
    options: { source: options.source, workDir: "", policy: options.policy, ...(options.signal ? { signal: options.signal } : {}) },
    dir: "",
    url: parsed.url,
    shown: describeSource(parsed.url),
    host: url.host,
    ref: parsed.ref,
    credential,
    authSent: false,
    failure: undefined,
    log: () => undefined,
    redact,
  };
  const timeoutMs = options.timeoutMs ?? REF_LOOKUP_TIMEOUT_MS;
  const scope = new AbortScope({
    timeoutMs,
    signal: options.signal,
    onTimeout: () =>
      (ctx.failure ??= new BuilderError("SOURCE_FETCH_FAILED", `the git server did not list the refs of ${ctx.shown} within ${timeoutMs / 1000} s`)),
  });
  const stop = (failure: BuilderError) => {
    ctx.failure ??= failure;
    scope.abort(ctx.failure);
  };
  const guarded = guardedHttpClient(ctx, guard, scope.signal, stop, 1024 ** 2 * 64);
  const onAuth = authCallback(ctx);
  try {
    const refs = await scope.race(listServerRefs({
      http: guarded.client,
      url: parsed.url,
      onAuth,
      onAuthFailure: () => ({ cancel: true }),
      symrefs: true,
      peelTags: true,
      // v1: one request (the advertisement) instead of v2's two (capabilities, then ls-refs);
      // the lookup is on the path of every unchanged resubmit
      protocolVersion: 1,
    }));
    const byName = new Map(refs.map((ref) => [ref.ref, ref]));
    const names = parsed.ref === undefined ? ["HEAD"] : [`refs/heads/${parsed.ref}`, `refs/tags/${parsed.ref}`, parsed.ref];
    for (const name of names) {
      const found = byName.get(name);
      if (found) return (found.peeled ?? found.oid).toLowerCase();
    }
    return undefined;
  } catch (error) {
    throw toBuilderError(ctx, error);
  } finally {
    scope.dispose();
    guarded.close();
  }
}
