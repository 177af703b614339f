import { isTerminal, type BuildRecord } from "@m1l0/config";
import type { Queue } from "bullmq";
import type { BuildJobData } from "./jobs.js";
import type { BuildStore } from "./store.js";

/** Pub/sub channel on which cancel requests for one queue's running builds are announced. */
export function cancelChannel(queueName: string): string {
  return `m1l0:cancel:${queueName}`;
}

export type CancelOutcome =
  /** the job had not started: removed from the queue, the record is `cancelled` */
  | "cancelled"
  /** a worker holds the job: it was told to abort (and will also see the record's flag) */
  | "signalled";

/**
 * Cancels a build wherever it is. Queued (waiting or delayed for a retry): the job is
 * removed and the record becomes `cancelled` here. Running: BullMQ refuses to remove a
 * locked job, so the holder is told over pub/sub; the record's `cancelRequestedAt` covers
 * a worker that missed the message or picks the job up later. CONFLICT when already finished.
 */
export async function cancelBuild(store: BuildStore, queue: Queue<BuildJobData>, id: string): Promise<{ record: BuildRecord; outcome: CancelOutcome }> {
  const marked = await store.markCancelRequested(id);
  const job = await queue.getJob(id);
  let removed = false;
  if (job) {
    const state = await job.getState();
    if (state === "waiting" || state === "delayed" || state === "prioritized" || state === "waiting-children") {
      // a worker may lock it between getState and remove: remove then throws and we signal
      removed = await job.remove().then(
        () => true,
        () => false,
      );
    }
  } else if (!isTerminal(marked.status) && marked.status === "queued") {
    // no job left (never enqueued or already cleaned up): nothing can run it any more
    removed = true;
  }
  if (removed) {
    const record = await store.transitionIfActive(id, "cancelled");
    return { record: record ?? (await store.require(id)), outcome: "cancelled" };
  }
  await store.announceCancel(cancelChannel(queue.name), id);
  return { record: await store.require(id), outcome: "signalled" };
}
