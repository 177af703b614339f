import { AbortScope } from "@m1l0/config";
import { createContextFilter, type ContextFilter } from "@m1l0/context";
import { describeSource, fetchSource, type FetchedSource } from "@m1l0/source";
import { mkdtemp, rm } from "node:fs/promises";
import path from "node:path";
import { computeBuildKey } from "../build-key.js";
import type { Attempt } from "./attempt.js";
import type { Identity } from "./identify.js";

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

/**
 * The source fetch of one attempt, which may start before identify has answered: as soon as
 * the answer cannot be `cached` (the target tag is absent), the clone overlaps the rest of the
 * lookup instead of following it. Dropped (aborted, awaited) if the answer is `cached` after all.
 */
export class SourceFetch {
  private running: Promise<FetchedSource> | undefined;
  /** follows the attempt's signal (cancel, timeout, shutdown) and adds drop() */
  private readonly scope: AbortScope;

  constructor(
    private readonly attempt: Attempt,
    private readonly workDir: string,
  ) {
    this.scope = new AbortScope(attempt.signal ? { signal: attempt.signal } : {});
  }

  /** Starts the fetch unless it runs already (idempotent). */
  start(): void {
    if (this.running) return;
    const { deps, config } = this.attempt;
    const fetchLog = (line: string) => void this.attempt.log.fetch(line);
    fetchLog(`fetching ${describeSource(config.source)}`);
    this.running = fetchSource({
      source: config.source,
      workDir: this.workDir,
      policy: deps.sourcePolicy,
      gitCredentials: deps.gitCredentials,
      ...(deps.s3 ? { s3: { client: deps.s3 } } : {}),
      onLog: fetchLog,
      signal: this.scope.signal,
    });
    // awaited by result() or drop(), never unhandled meanwhile; once settled, stop following the attempt's signal
    this.running.then(() => this.scope.dispose(), () => this.scope.dispose());
  }

  /** What was fetched (starting the fetch now if it has not started). */
  result(): Promise<FetchedSource> {
    this.start();
    return this.running as Promise<FetchedSource>;
  }

  /** Aborts a started fetch and waits until it has let go of the work dir. */
  async drop(): Promise<void> {
    if (!this.running) return;
    this.scope.abort(new Error("the fetch was dropped: the target already holds this build"));
    await this.running.catch(() => undefined);
  }
}

/** Finishes the fetch phase: waits for the source, settles the build key on what was fetched, reads its ignores. */
export async function fetchPhase(attempt: Attempt, source: SourceFetch, identity: Identity): Promise<Fetched> {
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
