import { BuilderError, isBuilderError, type BuildRecord } from "@m1l0/config";
import { buildJobSchema, type BuildJobData } from "@m1l0/queue";
import type { Job } from "bullmq";
import { answerJob, finishBuild } from "./finish.js";
import { abortReason, type BuildAborted, type BuildLifecycle } from "./lifecycle.js";
import type { WorkerMetrics } from "./metrics.js";
import { runBuild, type BuildOutcome, type PipelineDeps } from "./pipeline.js";
import { JobProgress } from "./progress.js";

/** Wraps the pipeline in BullMQ semantics: permanent failures are unrecoverable, others retry. */
export function createBuildProcessor(deps: PipelineDeps, metrics?: WorkerMetrics, lifecycle?: BuildLifecycle) {
  return async (job: Job<BuildJobData>, token?: string) => {
    metrics?.activeBuilds.inc();
    try {
      return await processBuild(deps, job, metrics, lifecycle, token);
    } finally {
      metrics?.activeBuilds.dec();
    }
  };
}

async function processBuild(workerDeps: PipelineDeps, job: Job<BuildJobData>, metrics?: WorkerMetrics, lifecycle?: BuildLifecycle, token?: string) {
  const { buildId, config } = buildJobSchema.parse(job.data);
  const attempt = job.attemptsMade + 1;
  const logger = workerDeps.logger.child({ buildId, attempt });
  logger.info({ jobId: job.id }, "processing");
  // every status change of this attempt also becomes the job's progress (the dashboard's view)
  const progress = new JobProgress(job, buildId, workerDeps.workerId, logger);
  const deps: PipelineDeps = { ...workerDeps, store: progress.wrap(workerDeps.store) };
  const finish = (outcome: BuildOutcome) =>
    finishBuild(
      { store: workerDeps.store, buildId, attempt, logger, job, ...(token ? { token } : {}), ...(metrics ? { metrics } : {}), ...(deps.artifacts ? { artifacts: deps.artifacts } : {}), notifier: deps.notifier, onSettled: (status) => progress.report(status) },
      outcome,
    ).then(answerJob);

  // Everything before `fetching` is pickup latency, so its steps overlap, one round trip each:
  // the job's log line, the record (for the cancel check; the attempt count is written with
  // `fetching`), and the spool (from here every event of this attempt is also spooled to disk,
  // the complete archived log; none is written before `fetching`, so the spool's seed misses
  // none). A cancel after the read reaches the running build through the lifecycle's channel
  // and poll.
  const spooling = deps.artifacts?.openLog(buildId);
  try {
    const [, before] = await Promise.all([progress.start(attempt), deps.store.require(buildId), spooling]);
    if (lifecycle && lifecycle.cancelRequested(before)) return await finish({ kind: "cancelled", when: "before-start" });
    return await finish(await runAttempt({ deps, job, buildId, config, attempt, before, ...(lifecycle ? { lifecycle } : {}) }));
  } finally {
    await spooling?.catch(() => undefined);
    await deps.artifacts?.sealLog(buildId);
  }
}

interface AttemptRun {
  deps: PipelineDeps;
  job: Job<BuildJobData>;
  buildId: string;
  config: BuildJobData["config"];
  attempt: number;
  /** the record as this attempt found it */
  before: BuildRecord;
  lifecycle?: BuildLifecycle;
}

/** Runs the pipeline under the build's supervision (cancel, timeout, shutdown, lost lock) and says how it ended. */
async function runAttempt({ deps, job, buildId, config, attempt, before, lifecycle }: AttemptRun): Promise<BuildOutcome> {
  if (before.status !== "queued" && before.worker && before.worker !== deps.workerId) {
    // the job's lock lapsed on another worker (killed, or cut off from Redis): take it over
    await deps.store.appendLog(buildId, "fetch", `worker ${before.worker} stopped responding during ${before.status}; resuming on ${deps.workerId}`);
  }
  const supervision = lifecycle?.supervise(buildId, config);
  try {
    return await runBuild(deps, buildId, config, supervision?.signal, attempt);
  } catch (error) {
    return outcomeOfFailure(error, abortReason(supervision?.signal), (job.opts.attempts ?? 1) - attempt);
  } finally {
    supervision?.dispose();
  }
}

/** What a thrown attempt means: an abort says why itself; a failure is retried while it may be and attempts are left. */
export function outcomeOfFailure(error: unknown, aborted: BuildAborted | undefined, attemptsLeft: number): BuildOutcome {
  if (aborted?.kind === "lost") return { kind: "lost", message: aborted.message };
  if (aborted?.kind === "shutdown") return { kind: "requeued", why: "shutdown" };
  if (aborted?.kind === "timeout") return { kind: "failed", cause: "timeout", error: new BuilderError("BUILD_TIMEOUT", aborted.message) };
  if (aborted?.kind === "cancel") return { kind: "cancelled", when: "running" };
  const failure = isBuilderError(error) ? error : new BuilderError("INTERNAL", `internal error: ${(error as Error).message ?? String(error)}`, { cause: error });
  return failure.retryable && attemptsLeft > 0 ? { kind: "requeued", why: "retry", error: failure } : { kind: "failed", cause: "attempt", error: failure };
}
