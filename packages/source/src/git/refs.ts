import { BuilderError } from "@m1l0/config";
import { listServerRefs } from "isomorphic-git";
import { parseGitSource } from "../describe.js";
import type { GitCredential, SourcePolicy } from "../types.js";
import { toBuilderError } from "./errors.js";
import { FULL_SHA, openSession } from "./session.js";

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
/** Most bytes a ref advertisement may take (a repository with very many branches and tags stays far below). */
const REF_LOOKUP_MAX_BYTES = 64 * 1024 ** 2;

/**
 * The commit a git source's ref points at, asked of the server without cloning (one ref
 * advertisement, under the same host policy, redirect checks and credentials as a clone).
 * A full 40-hex revision is its own answer. Undefined when the server does not name the ref
 * (the clone then decides and reports the error).
 */
export async function resolveGitRevision(options: ResolveRevisionOptions): Promise<string | undefined> {
  const parsed = parseGitSource(options.source);
  if (parsed.ref !== undefined && FULL_SHA.test(parsed.ref)) return parsed.ref.toLowerCase();
  const session = await openSession({
    source: options.source,
    policy: options.policy,
    gitCredentials: options.gitCredentials,
    signal: options.signal,
    timeoutMs: options.timeoutMs ?? REF_LOOKUP_TIMEOUT_MS,
    maxBytes: REF_LOOKUP_MAX_BYTES,
    onTimeout: (shown, seconds) => new BuilderError("SOURCE_FETCH_FAILED", `the git server did not list the refs of ${shown} within ${seconds} s`),
  });
  try {
    const refs = await session.race(listServerRefs({
      http: session.http,
      url: parsed.url,
      onAuth: session.onAuth,
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
    throw toBuilderError(session.ctx, error);
  } finally {
    session.close();
  }
}
