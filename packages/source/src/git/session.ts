import { AbortScope, BuilderError } from "@m1l0/config";
import type { GitAuth, HttpClient } from "isomorphic-git";
import path from "node:path";
import { describeSource, parseGitSource } from "../describe.js";
import { NetworkGuard } from "../network.js";
import type { GitCredential, SourcePolicy } from "../types.js";
import { guardedHttpClient } from "./transport.js";

export const FULL_SHA = /^[0-9a-f]{40}$/i;

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

/** What the error mapping, the transport and the caps of one git session share. */
export interface Context {
  policy: SourcePolicy;
  signal: AbortSignal | undefined;
  dir: string;
  url: string;
  shown: string;
  host: string;
  ref: string | undefined;
  credential: GitCredential | undefined;
  authSent: boolean;
  /** why the session was stopped by a policy or a cap; wins over whatever error isomorphic-git reports */
  failure: BuilderError | undefined;
  log: (line: string) => void;
  redact: (text: string) => string;
}

export function checkScheme(url: URL, policy: SourcePolicy): void {
  if (url.protocol === "http:" && !policy.allowHttp) {
    throw new BuilderError("SOURCE_NOT_ALLOWED", "http sources are disabled; use https or ask the operator to set ALLOW_HTTP_SOURCES");
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new BuilderError("SOURCE_NOT_ALLOWED", `unsupported git URL scheme ${url.protocol.replace(/:$/, "")}: use https://host/repo.git`);
  }
}

/**
 * isomorphic-git's onAuth: credentials only for the source's own host, only when the server
 * asks (401), and only once — a rejected token cancels instead of looping.
 */
export function authCallback(ctx: Context): (authUrl: string) => GitAuth {
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

export interface SessionOptions {
  source: string;
  policy: SourcePolicy;
  gitCredentials?: GitCredential[] | undefined;
  signal?: AbortSignal | undefined;
  /** where a clone checks out ("" for a ref lookup) */
  workDir?: string;
  onLog?: ((line: string) => void) | undefined;
  /** the session's deadline and the most bytes it may receive */
  timeoutMs: number;
  maxBytes: number;
  /** the error when the deadline passes */
  onTimeout: (shown: string, seconds: number) => BuilderError;
}

/** One conversation with a git server: the policy checked, its deadline, byte cap and credentials in place. */
export interface GitSession {
  ctx: Context;
  /** the source's ref and subdirectory as parsed */
  parsed: ReturnType<typeof parseGitSource>;
  /** isomorphic-git's HTTP client, checking every request and redirect */
  http: HttpClient;
  onAuth: (authUrl: string) => GitAuth;
  /** aborted at the deadline, on a cap or policy stop, or with the build's signal */
  signal: AbortSignal;
  /** stops the session with `failure` (a cap or policy refusal); the first one wins */
  stop(failure: BuilderError): void;
  /** waits for `work`, or for the deadline, the caps or the build's signal */
  race<T>(work: Promise<T>): Promise<T>;
  close(): void;
}

/**
 * Opens a session: refuses the scheme and host before touching the network or the disk (every
 * request is checked again when it connects), then puts the deadline, the caps and the build's
 * own signal behind one scope, so whichever comes first stops it.
 */
export async function openSession(options: SessionOptions): Promise<GitSession> {
  const parsed = parseGitSource(options.source);
  const url = new URL(parsed.url);
  const shown = describeSource(parsed.url);
  checkScheme(url, options.policy);
  const guard = new NetworkGuard(options.policy);
  guard.checkUrlHost(url);
  await guard.resolveChecked(url.hostname);
  options.signal?.throwIfAborted();

  const tokens = (options.gitCredentials ?? []).map((c) => c.token).filter((token) => token.length > 0);
  const redact = (text: string) => tokens.reduce((acc, token) => acc.split(token).join("***"), text);
  const ctx: Context = {
    policy: options.policy,
    signal: options.signal,
    dir: options.workDir ? path.resolve(options.workDir) : "",
    url: parsed.url,
    shown,
    host: url.host,
    ref: parsed.ref,
    credential: credentialFor(options.gitCredentials, url),
    authSent: false,
    failure: undefined,
    log: (line) => options.onLog?.(redact(line)),
    redact,
  };
  const scope = new AbortScope({
    timeoutMs: options.timeoutMs,
    signal: options.signal,
    onTimeout: () => (ctx.failure ??= options.onTimeout(shown, options.timeoutMs / 1000)),
  });
  const stop = (failure: BuilderError) => {
    ctx.failure ??= failure;
    scope.abort(ctx.failure);
  };
  const guarded = guardedHttpClient(ctx, guard, scope.signal, stop, options.maxBytes);
  return {
    ctx,
    parsed,
    http: guarded.client,
    onAuth: authCallback(ctx),
    signal: scope.signal,
    stop,
    race: (work) => scope.race(work),
    close: () => {
      scope.dispose();
      guarded.close();
    },
  };
}
