import { createContextFilter, type ContextFilter } from "@m1l0/context";
import { describeSource, fetchSource, type FetchedSource } from "@m1l0/source";
import { mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { computeBuildKey } from "../build-key.js";
import type { Attempt } from "./attempt.js";
import type { Identity } from "./identify.js";
import { Prefetch } from "./prefetch.js";

export interface Fetched {
  /** the source's root folder in this attempt's work dir */
  root: string;
  commit?: string;
  /** the user's ignores, applied while packing */
  filter: ContextFilter;
  /** the build key of what was fetched (it moves with a branch that moved since identify) */
  buildKey?: string;
}

/** Runs `work` with a fresh work dir of this attempt, removed afterwards whatever happens. */
export async function withWorkDir<T>(attempt: Attempt, work: (workDir: string) => Promise<T>): Promise<T> {
  const workDir = await mkdtemp(path.join(attempt.deps.workDir, `m1l0-${attempt.buildId}-`));
  try {
    return await work(workDir);
  } finally {
    await rm(workDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** The source fetch of one attempt, into its work dir; a Prefetch so it can overlap identify. */
export function sourceFetch(attempt: Attempt, workDir: string): Prefetch<FetchedSource> {
  const { deps, config } = attempt;
  const fetchLog = (line: string) => void attempt.log.fetch(line);
  return new Prefetch((signal) => {
    fetchLog(`fetching ${describeSource(config.source)}`);
    return fetchSource({
      source: config.source,
      workDir,
      policy: deps.sourcePolicy,
      gitCredentials: deps.gitCredentials,
      ...(deps.s3 ? { s3: { client: deps.s3 } } : {}),
      onLog: fetchLog,
      signal,
    });
  }, attempt.signal);
}

/** Finishes the fetch phase: waits for the source, settles the build key on what was fetched, reads its ignores. */
export async function fetchPhase(attempt: Attempt, source: Prefetch<FetchedSource>, identity: Identity): Promise<Fetched> {
  const fetchLog = (line: string) => void attempt.log.fetch(line);
  const fetched = await source.result();
  let buildKey = identity.key?.buildKey;
  const inputs = identity.key?.inputs;
  if (inputs && fetched.commit && inputs.source.startsWith("git:") && inputs.source !== `git:${fetched.commit}`) {
    // the branch moved between the ref lookup and the clone: the image is made of what was cloned
    buildKey = computeBuildKey({ ...inputs, source: `git:${fetched.commit}` });
    fetchLog(`the ref moved while fetching; build key is now ${buildKey}`);
  }
  const filter = await createContextFilter(fetched.root, attempt.config.ignores);
  return { root: fetched.root, filter, ...(fetched.commit ? { commit: fetched.commit } : {}), ...(buildKey ? { buildKey } : {}) };
}
