import type { BuildConfig, BuildRecord } from "@m1l0/config";
import { cancelChannel, type BuildStore } from "@m1l0/queue";
import type { Redis } from "ioredis";
import type { Logger } from "pino";

/** Why a running build was aborted; carried as the AbortSignal's reason. */
/** lost: this worker's job lock lapsed (e.g. a long event-loop stall) and another worker may run the build */
export type AbortKind = "cancel" | "timeout" | "shutdown" | "lost";

export class BuildAborted extends Error {
  constructor(
    readonly kind: AbortKind,
    message: string,
  ) {
    super(message);
    this.name = "BuildAborted";
  }
}

export interface LifecycleOptions {
  queueName: string;
  /** default per-build limit when the request sets none */
  defaultTimeoutSeconds: number;
  /** operator maximum; a request's own `timeout` is capped to it */
  maxTimeoutSeconds: number;
  /** how often a running build re-reads its record's cancel flag (covers missed pub/sub messages) */
  cancelPollMs?: number;
}

export interface Supervision {
  signal: AbortSignal;
  timeoutSeconds: number;
  dispose(): void;
}

/** The effective limit for one build: its own request, else the default, never above the maximum. */
export function effectiveTimeoutSeconds(config: Pick<BuildConfig, "timeout">, options: Pick<LifecycleOptions, "defaultTimeoutSeconds" | "maxTimeoutSeconds">): number {
  return Math.min(config.timeout ?? options.defaultTimeoutSeconds, options.maxTimeoutSeconds);
}

/**
 * Owns the AbortController of every build running in this worker process: cancel requests
 * (pub/sub + the record's flag), per-build timeouts, and aborting everything at shutdown.
 */
export class BuildLifecycle {
  private readonly running = new Map<string, AbortController>();
  private subscriber: Redis | undefined;

  constructor(
    private readonly store: BuildStore,
    private readonly options: LifecycleOptions,
    private readonly logger: Logger,
  ) {}

  /** Subscribes to the queue's cancel channel on a connection of its own (subscribers cannot run commands). */
  async listen(connection: Redis): Promise<void> {
    const subscriber = connection.duplicate();
    subscriber.on("error", (error) => this.logger.warn({ err: error }, "cancel subscriber error"));
    subscriber.on("message", (_channel: string, buildId: string) => this.abort(buildId, new BuildAborted("cancel", "cancelled on request")));
    await subscriber.subscribe(cancelChannel(this.options.queueName));
    this.subscriber = subscriber;
  }

  get runningCount(): number {
    return this.running.size;
  }

  /** Whether a cancel was requested before the record was read (the processor passes the one it just updated). */
  cancelRequested(record: BuildRecord): boolean {
    return Boolean(record.cancelRequestedAt);
  }

  supervise(buildId: string, config: BuildConfig): Supervision {
    const controller = new AbortController();
    this.running.set(buildId, controller);
    const timeoutSeconds = effectiveTimeoutSeconds(config, this.options);
    const timer = setTimeout(() => this.abort(buildId, new BuildAborted("timeout", `timed out after ${timeoutSeconds} s`)), timeoutSeconds * 1000);
    const poll = setInterval(() => {
      void this.store
        .get(buildId)
        .then((record) => {
          if (record?.cancelRequestedAt) this.abort(buildId, new BuildAborted("cancel", "cancelled on request"));
        })
        .catch(() => undefined); // Redis blips: the next poll or the pub/sub message covers it
    }, this.options.cancelPollMs ?? 1_000);
    return {
      signal: controller.signal,
      timeoutSeconds,
      dispose: () => {
        clearTimeout(timer);
        clearInterval(poll);
        if (this.running.get(buildId) === controller) this.running.delete(buildId);
      },
    };
  }

  abort(buildId: string, reason: BuildAborted): void {
    const controller = this.running.get(buildId);
    if (!controller || controller.signal.aborted) return;
    this.logger.info({ buildId, kind: reason.kind }, `aborting build: ${reason.message}`);
    controller.abort(reason);
  }

  abortAll(reason: BuildAborted): void {
    for (const buildId of [...this.running.keys()]) this.abort(buildId, reason);
  }

  async close(): Promise<void> {
    this.subscriber?.disconnect();
    this.subscriber = undefined;
  }
}

/** The reason a signal was aborted with, when it is one of ours. */
export function abortReason(signal: AbortSignal | undefined): BuildAborted | undefined {
  return signal?.aborted && signal.reason instanceof BuildAborted ? signal.reason : undefined;
}
