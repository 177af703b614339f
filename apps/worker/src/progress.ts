import type { BuildRecord, BuildStatus } from "@m1l0/config";
import type { BuildStore } from "@m1l0/queue";
import type { Job } from "bullmq";
import type { Logger } from "pino";

/**
 * How far along each phase is, for the dashboard's progress ring. A failed or cancelled
 * build keeps the percentage of the phase it stopped in (the ring turns red there).
 */
const PHASE_PERCENT: Partial<Record<BuildStatus, number>> = {
  queued: 0,
  fetching: 10,
  building: 30,
  pushing: 80,
  succeeded: 100,
  cached: 100,
};

/** What a build job's BullMQ progress holds: its phase, and where its log is (never credentials). */
export interface BuildJobProgress {
  /** percentage; bull-board draws it as the job's progress ring */
  progress: number;
  phase: BuildStatus;
  /** the REST path of the build's log (GET with an API token; `?follow=1` streams it) */
  log: string;
  worker: string;
}

export function buildLogPath(buildId: string): string {
  return `/builds/${buildId}/logs`;
}

/**
 * Mirrors a build's status into its BullMQ job, so the dashboard shows where each build is:
 * the job's progress becomes `{ progress, phase, log }` and every status change adds a line to
 * the job's logs tab. The build record stays the source of truth; a progress write that fails
 * (Redis blip, a job removed meanwhile) is logged and never fails the build.
 */
export class JobProgress {
  private percent = 0;

  constructor(
    private readonly job: Job,
    private readonly buildId: string,
    private readonly workerId: string,
    private readonly logger: Logger,
  ) {}

  /** The first line of the job's logs for this attempt: where the build's own log is. */
  async start(attempt: number): Promise<void> {
    await this.write(() => this.job.log(`attempt ${attempt} on ${this.workerId}; build log: ${buildLogPath(this.buildId)} (GET with an API token, ?follow=1 to stream)`));
  }

  async report(status: BuildStatus): Promise<void> {
    this.percent = PHASE_PERCENT[status] ?? this.percent;
    const progress: BuildJobProgress = { progress: this.percent, phase: status, log: buildLogPath(this.buildId), worker: this.workerId };
    await this.write(async () => {
      await this.job.updateProgress(progress);
      await this.job.log(`${new Date().toISOString()} ${status}`);
    });
  }

  /**
   * The store as this job's pipeline sees it: the same store, whose status changes are also
   * reported here. Everything else is the store's own method, unchanged.
   */
  wrap(store: BuildStore): BuildStore {
    const report = async (record: BuildRecord | undefined) => {
      if (record) await this.report(record.status);
      return record;
    };
    return new Proxy(store, {
      get: (target, property, receiver) => {
        if (property === "transition") return async (...args: Parameters<BuildStore["transition"]>) => (await report(await target.transition(...args)))!;
        if (property === "transitionIfActive") return async (...args: Parameters<BuildStore["transitionIfActive"]>) => report(await target.transitionIfActive(...args));
        const value: unknown = Reflect.get(target, property, receiver);
        return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  private async write(action: () => Promise<unknown>): Promise<void> {
    try {
      await action();
    } catch (error) {
      this.logger.warn({ err: error, buildId: this.buildId }, "cannot update the job's progress");
    }
  }
}
