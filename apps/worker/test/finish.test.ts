import { BuilderError, type BuildStatus } from "@m1l0/config";
import { UnrecoverableError, WaitingError } from "bullmq";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { answerJob, finishBuild, type FinishContext, type JobAnswer } from "../src/finish.js";
import { BuildAborted } from "../src/lifecycle.js";
import { WorkerMetrics } from "../src/metrics.js";
import type { BuildOutcome } from "../src/pipeline.js";
import { outcomeOfFailure } from "../src/processor.js";
import { pipelineFixture } from "./support/pipeline-fixture.js";

// finishBuild records every way an attempt ends, on the real store (Redis); the archive and
// the BullMQ job are fakes behind their narrow seams.
const fixture = pipelineFixture();
afterAll(() => fixture.close());

const image = { registry: "registry.test", repository: "m1l0/unit", tag: "v1", reference: "registry.test/m1l0/unit:v1", digest: `sha256:${"a".repeat(64)}` };

async function finish(outcome: BuildOutcome, options: { status?: BuildStatus; job?: boolean; notifierFails?: boolean } = {}) {
  const { id } = await fixture.submit({ source: "dir:///nowhere" });
  if (options.status) await fixture.store.transition(id, options.status);
  const archived: string[] = [];
  const settled: BuildStatus[] = [];
  const waits: Array<string | undefined> = [];
  const notified: BuildStatus[] = [];
  const metrics = new WorkerMetrics("w-unit");
  const ctx: FinishContext = {
    store: fixture.store,
    buildId: id,
    attempt: 2,
    logger: pino({ level: "silent" }),
    metrics,
    artifacts: { archiveBuild: (buildId) => void archived.push(buildId) },
    ...(options.job === false ? {} : { job: { moveToWait: async (token?: string) => void waits.push(token) }, token: "tok" }),
    onSettled: async (status) => void settled.push(status),
    notifier: {
      buildEnded: async (ended) => {
        if (options.notifierFails) throw new Error("redis down");
        notified.push(ended.status);
      },
    },
  };
  const answer = await finishBuild(ctx, outcome);
  const record = await fixture.store.require(id);
  const log = (await fixture.store.readEvents(id, "0")).flatMap((item) => (item.event.type === "log" ? [item.event.line] : []));
  const counted = async (outcome: string) => (await metrics.buildsTotal.get()).values.find((value) => value.labels.outcome === outcome)?.value ?? 0;
  return { id, answer, record, archived, settled, waits, log, counted, notified };
}

const thrown = (answer: JobAnswer) => ("error" in answer ? answer.error : undefined);

describe("finishBuild", () => {
  it("records a success, counts it, archives it and answers the image", async () => {
    const done = await finish({ kind: "succeeded", image }, { status: "pushing" });
    expect(done.record).toMatchObject({ status: "succeeded", image });
    expect(answerJob(done.answer)).toEqual({ image });
    expect(done.archived).toEqual([done.id]);
    expect(done.settled).toEqual(["succeeded"]);
    expect(done.notified).toEqual(["succeeded"]);
    expect(await done.counted("succeeded")).toBe(1);
  });

  it("tells the notifier (the webhooks) of terminal statuses only, and a notifier failure changes nothing", async () => {
    const requeued = await finish({ kind: "requeued", why: "retry", error: new BuilderError("REGISTRY_UNREACHABLE", "registry down") }, { status: "pushing" });
    expect(requeued.notified).toEqual([]);
    const cancelled = await finish({ kind: "cancelled", when: "running" }, { status: "building" });
    expect(cancelled.notified).toEqual(["cancelled"]);
    const failing = await finish({ kind: "succeeded", image }, { status: "pushing", notifierFails: true });
    expect(failing.record.status).toBe("succeeded");
    expect(answerJob(failing.answer)).toEqual({ image });
  });

  it("records a cached build with its key and commit", async () => {
    const done = await finish({ kind: "cached", image, buildKey: "sha256:k", commit: "abc" }, { status: "fetching" });
    expect(done.record).toMatchObject({ status: "cached", image, buildKey: "sha256:k", commit: "abc" });
    expect(done.archived).toEqual([done.id]);
    expect(await done.counted("cached")).toBe(1);
  });

  it("requeues a retryable failure: attempt history, log line, the error itself to BullMQ, no archive", async () => {
    const error = new BuilderError("REGISTRY_UNREACHABLE", "registry down");
    const done = await finish({ kind: "requeued", why: "retry", error }, { status: "pushing" });
    expect(done.record.status).toBe("queued");
    expect(done.record.error).toEqual({ code: "REGISTRY_UNREACHABLE", message: "registry down" });
    expect(done.record.attemptErrors).toMatchObject([{ attempt: 2, code: "REGISTRY_UNREACHABLE", message: "registry down" }]);
    expect(done.log.at(-1)).toBe("attempt failed, will retry: registry down");
    expect(thrown(done.answer)).toBe(error);
    expect(done.archived).toEqual([]);
  });

  it("fails a final attempt for good: UnrecoverableError, archived, counted", async () => {
    const done = await finish({ kind: "failed", cause: "attempt", error: new BuilderError("ENTRY_NOT_FOUND", "no main.py") }, { status: "fetching" });
    expect(done.record).toMatchObject({ status: "failed", error: { code: "ENTRY_NOT_FOUND", message: "no main.py" } });
    expect(done.log.at(-1)).toBe("build failed: no main.py");
    expect(thrown(done.answer)).toBeInstanceOf(UnrecoverableError);
    expect(done.archived).toEqual([done.id]);
    expect(await done.counted("failed")).toBe(1);
  });

  it("fails a timed-out build with BUILD_TIMEOUT", async () => {
    const done = await finish(outcomeOfFailure(new Error("aborted"), new BuildAborted("timeout", "timed out after 5 s"), 3), { status: "building" });
    expect(done.record).toMatchObject({ status: "failed", error: { code: "BUILD_TIMEOUT", message: "timed out after 5 s" } });
    expect(done.log.at(-1)).toBe("build failed: timed out after 5 s");
    expect((thrown(done.answer) as Error).message).toBe("timed out after 5 s");
    expect(done.archived).toEqual([done.id]);
  });

  it("cancels a running build on request, and one cancelled before it started", async () => {
    const running = await finish(outcomeOfFailure(new Error("aborted"), new BuildAborted("cancel", "cancelled on request"), 3), { status: "building" });
    expect(running.record.status).toBe("cancelled");
    expect(running.log.at(-1)).toBe("build cancelled on request");
    expect((thrown(running.answer) as Error).message).toBe("cancelled");
    expect(running.archived).toEqual([running.id]);
    const early = await finish({ kind: "cancelled", when: "before-start" });
    expect(early.record.status).toBe("cancelled");
    expect((thrown(early.answer) as Error).message).toBe("cancelled before it started");
    expect(early.archived).toEqual([]);
  });

  it("puts a build back to queued and its job back to waiting when the worker shuts down", async () => {
    const done = await finish(outcomeOfFailure(new Error("aborted"), new BuildAborted("shutdown", "worker shutting down"), 3), { status: "building" });
    expect(done.record.status).toBe("queued");
    expect(done.waits).toEqual(["tok"]);
    expect(thrown(done.answer)).toBeInstanceOf(WaitingError);
    expect(done.log.at(-1)).toBe("worker shutting down: build requeued for another worker");
    expect(done.archived).toEqual([]);
  });

  it("leaves a lost build's record to the worker that took it over", async () => {
    const done = await finish(outcomeOfFailure(new Error("aborted"), new BuildAborted("lost", "its lock could not be renewed"), 3), { status: "building" });
    expect(done.record.status).toBe("building");
    expect(done.settled).toEqual([]);
    expect((thrown(done.answer) as Error).message).toBe("lock lost: its lock could not be renewed");
    expect(done.archived).toEqual([]);
  });

  it("fails a job that stalled too often, unless the build already ended", async () => {
    const stalled: BuildOutcome = { kind: "failed", cause: "stalled", error: new BuilderError("INTERNAL", "stopped responding") };
    const active = await finish(stalled, { status: "building", job: false });
    expect(active.record).toMatchObject({ status: "failed", error: { code: "INTERNAL" } });
    expect(active.archived).toEqual([active.id]);
    const ended = await finish(stalled, { status: "succeeded", job: false });
    expect(ended.record.status).toBe("succeeded");
    expect(ended.archived).toEqual([]);
  });
});

describe("outcomeOfFailure", () => {
  it("retries a retryable failure while attempts are left, and fails the rest", () => {
    const transient = new BuilderError("REGISTRY_UNREACHABLE", "down");
    expect(outcomeOfFailure(transient, undefined, 1)).toEqual({ kind: "requeued", why: "retry", error: transient });
    expect(outcomeOfFailure(transient, undefined, 0)).toEqual({ kind: "failed", cause: "attempt", error: transient });
    const permanent = new BuilderError("ENTRY_NOT_FOUND", "no entry");
    expect(outcomeOfFailure(permanent, undefined, 5)).toMatchObject({ kind: "failed", cause: "attempt" });
    expect(outcomeOfFailure(new TypeError("boom"), undefined, 0)).toMatchObject({ kind: "failed", error: { code: "INTERNAL", message: "internal error: boom" } });
  });
});
