import { isTerminal, type BuilderError, type BuildRecord, type BuildStatus, type PushedImage } from "@m1l0/config";
import type { BuildStore } from "@m1l0/queue";
import type { BuildNotifier } from "@m1l0/webhooks";
import { UnrecoverableError, WaitingError } from "bullmq";
import type { Logger } from "pino";
import type { ArtifactArchiver } from "./artifacts.js";
import type { WorkerMetrics } from "./metrics.js";
import type { BuildOutcome } from "./pipeline.js";

/** What BullMQ is told about the job: its return value, or the error the processor throws. */
export type JobAnswer = { result: { image: PushedImage | undefined } } | { error: Error };

export interface FinishContext {
  /** the worker's own store (status reports to the job go through `onSettled`) */
  store: BuildStore;
  buildId: string;
  /** 1-based number of the attempt that ended */
  attempt: number;
  logger: Logger;
  metrics?: WorkerMetrics;
  artifacts?: Pick<ArtifactArchiver, "archiveBuild">;
  /** the BullMQ job, when there is one to answer (a stalled job was already failed by BullMQ) */
  job?: { moveToWait(token?: string): Promise<unknown> };
  token?: string;
  /** told where the build ended up (the job's progress) */
  onSettled?: (status: BuildStatus) => Promise<void>;
  /** told of the record once it is terminal (enqueues the completion webhooks) */
  notifier: Pick<BuildNotifier, "buildEnded">;
}

/**
 * The one place a build attempt ends: records the terminal state (succeeded, cached, failed,
 * cancelled) or the requeue, writes the last log line, updates the metrics, starts the archive
 * of the log and record (after the terminal status, so the archived log ends with it; never
 * awaited: S3 must not hold up the job), and says what BullMQ needs to hear.
 */
export async function finishBuild(ctx: FinishContext, outcome: BuildOutcome): Promise<JobAnswer> {
  const { store, buildId } = ctx;
  const settled = async (record: BuildRecord | undefined) => {
    if (record) await ctx.onSettled?.(record.status);
    if (record) await notifyEnded(ctx, record);
    return record;
  };
  const archive = () => ctx.artifacts?.archiveBuild(buildId);
  const log = (line: string) => store.appendLog(buildId, "build", line);
  switch (outcome.kind) {
    case "succeeded":
    case "cached": {
      const patch = outcome.kind === "cached" ? { buildKey: outcome.buildKey, ...(outcome.commit ? { commit: outcome.commit } : {}), image: outcome.image } : { image: outcome.image };
      const record = (await settled(await store.transition(buildId, outcome.kind, patch)))!;
      ctx.logger.info({ image: record.image?.reference }, "build succeeded");
      ctx.metrics?.observeFinished(record);
      archive();
      return { result: { image: record.image } };
    }
    case "requeued": {
      if (outcome.why === "shutdown") {
        await settled((await store.transitionIfActive(buildId, "queued")) ?? (await store.get(buildId)));
        await log("worker shutting down: build requeued for another worker");
        await ctx.job?.moveToWait(ctx.token);
        return { error: new WaitingError() };
      }
      const { error } = outcome;
      await recordFailedAttempt(ctx, outcome.error, true);
      await settled(await store.transition(buildId, "queued", { error: { code: error.code, message: error.message } }));
      return { error };
    }
    case "failed": {
      const { error } = outcome;
      const failure = { error: { code: error.code, message: error.message } };
      if (outcome.cause === "attempt") {
        await recordFailedAttempt(ctx, error, false);
        const record = (await settled(await store.transition(buildId, "failed", failure)))!;
        ctx.metrics?.observeFinished(record);
        archive();
      } else if (outcome.cause === "timeout") {
        await log(`build failed: ${error.message}`);
        await settled((await store.transitionIfActive(buildId, "failed", failure)) ?? (await store.get(buildId)));
        archive();
      } else if (await settled(await store.transitionIfActive(buildId, "failed", failure))) archive();
      return { error: new UnrecoverableError(error.message) };
    }
    case "cancelled": {
      if (outcome.when === "before-start") {
        await settled((await store.transitionIfActive(buildId, "cancelled")) ?? (await store.get(buildId)));
        return { error: new UnrecoverableError("cancelled before it started") };
      }
      await log("build cancelled on request");
      await settled((await store.transitionIfActive(buildId, "cancelled")) ?? (await store.get(buildId)));
      archive();
      return { error: new UnrecoverableError("cancelled") };
    }
    case "lost":
      // the record now belongs to whichever worker took the job over: leave it alone
      await log(`worker lost the build's lock (${outcome.message}); stopped here, another worker continues it`);
      return { error: new Error(`lock lost: ${outcome.message}`) };
  }
}

/** The webhooks hear of the end; a failure to enqueue them must not change how the build ended. */
async function notifyEnded(ctx: FinishContext, record: BuildRecord): Promise<void> {
  if (!isTerminal(record.status)) return;
  await ctx.notifier.buildEnded(record).catch((error: Error) => ctx.logger.error({ err: { message: error.message } }, "could not enqueue the build's webhooks"));
}

async function recordFailedAttempt(ctx: FinishContext, error: BuilderError, willRetry: boolean): Promise<void> {
  ctx.logger.warn({ code: error.code, willRetry }, error.message);
  ctx.metrics?.observeFailedAttempt(error.code);
  await ctx.store.recordAttemptError(ctx.buildId, { attempt: ctx.attempt, code: error.code, message: error.message, at: new Date().toISOString() });
  await ctx.store.appendLog(ctx.buildId, "build", `${willRetry ? "attempt failed, will retry" : "build failed"}: ${error.message}`);
}

/** Returns the job's value or throws its error: how BullMQ hears an answer. */
export function answerJob(answer: JobAnswer): { image: PushedImage | undefined } {
  if ("error" in answer) throw answer.error;
  return answer.result;
}
