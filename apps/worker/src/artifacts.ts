import { isTerminal, type ArtifactUploadStatus, type BuildArtifacts } from "@m1l0/config";
import type { ContextTap } from "@m1l0/context";
import type { BuildStore, PendingUploads, UploadState } from "@m1l0/queue";
import { archiveRecord, artifactKeys, MULTIPART_MIN_PART_BYTES, type ArtifactStore } from "@m1l0/storage";
import { createHash, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { access, rm } from "node:fs/promises";
import path from "node:path";
import { pipeline as pipelineAsync } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { Logger } from "pino";
import { LogSpool, type LogSpoolContext } from "./log-spool.js";
import { uploadCompleteLog } from "./upload-log.js";

export type ArtifactKind = keyof BuildArtifacts;

export interface RetryPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
  /** 0 = keep retrying while the worker runs (an S3 outage must not lose logs) */
  maxAttempts: number;
}

export interface ArtifactArchiverOptions {
  artifacts: ArtifactStore;
  builds: BuildStore;
  /** what each build still has to upload, durable in Redis, with the upload leases */
  uploads: PendingUploads;
  /** this worker and its host: spools are readable by workers on the same host only */
  workerId: string;
  host: string;
  /** where logs and packed contexts are spooled */
  spoolDir: string;
  logger: Logger;
  /** a log part is uploaded each time this many bytes gathered [S3's minimum, 5 MiB] */
  logPartBytes?: number;
  /** an uploader's lease on a build; another worker may take over once it lapses [30 s] */
  leaseMs?: number;
  /** how often the sweeper looks for uploads whose worker is gone [10 s] */
  sweepIntervalMs?: number;
  retry?: Partial<RetryPolicy>;
  onUploadError?: (kind: ArtifactKind) => void;
}

export interface ContextCapture {
  /** given to packContext: sees every chunk Docker is sent (so the archive is exactly the context that was built) */
  tap: ContextTap;
  /**
   * Call once Docker is done with the context (success or not). When the whole context was packed
   * context: records its digest and starts the background upload, returning `sha256:<hex>`.
   * Never throws: archiving must not fail a build.
   */
  finish(): Promise<string | undefined>;
}

const DEFAULT_RETRY: RetryPolicy = { initialDelayMs: 1_000, maxDelayMs: 30_000, maxAttempts: 0 };

/**
 * Archives what a build leaves behind — its context, its log and its final record — in the
 * artifact store, in the background and with retries, so a slow or unreachable store never
 * fails or stalls a build. The record's `artifacts` field says how far the uploads got.
 * What is left to upload is kept in Redis (PendingUploads): if this worker dies, the sweeper
 * of any other worker takes the build's lapsed lease and finishes the uploads.
 */
export class ArtifactArchiver {
  private readonly retry: RetryPolicy;
  /** per build: the context upload, which the log/record upload waits for */
  private readonly contextUploads = new Map<string, Promise<void>>();
  /** per build: the log spool of the attempt running here */
  private readonly spools = new Map<string, LogSpool>();
  /** per build: a seal in progress (the processor and the archive both wait for it) */
  private readonly sealing = new Map<string, Promise<void>>();
  /** builds whose archiving runs in this process */
  private readonly archiving = new Set<string>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly stopping = new AbortController();
  private sweeper: NodeJS.Timeout | undefined;
  readonly logPartBytes: number;
  private readonly leaseMs: number;

  constructor(private readonly options: ArtifactArchiverOptions) {
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
    this.logPartBytes = options.logPartBytes ?? MULTIPART_MIN_PART_BYTES;
    this.leaseMs = options.leaseMs ?? 30_000;
  }

  private logContext(buildId: string): LogSpoolContext {
    const { builds, uploads, artifacts, host, workerId, logger } = this.options;
    return { buildId, builds, uploads, artifacts, host, worker: workerId, partBytes: this.logPartBytes, logger };
  }

  /** Starts spooling the log of the attempt beginning here (every event this process appends to the build). */
  async openLog(buildId: string): Promise<void> {
    if (this.spools.has(buildId)) return;
    const spool = new LogSpool(this.logContext(buildId), path.join(this.options.spoolDir, `m1l0-log-${buildId}-${randomUUID()}.spool`));
    this.spools.set(buildId, spool);
    await spool.open();
  }

  /** The attempt ended here: its spool is written out and closed. Every caller waits for the same sealing. */
  async sealLog(buildId: string): Promise<void> {
    const spool = this.spools.get(buildId);
    if (!spool) return this.sealing.get(buildId);
    this.spools.delete(buildId);
    const sealed = spool.seal().finally(() => this.sealing.delete(buildId));
    this.sealing.set(buildId, sealed);
    return sealed;
  }

  /** Every `sweepIntervalMs`, finishes the uploads of builds whose uploader is gone (any worker's). */
  startSweeper(): void {
    const interval = this.options.sweepIntervalMs ?? 10_000;
    const tick = () => {
      void this.sweep()
        .catch((error: unknown) => this.options.logger.warn({ err: error }, "upload sweep failed"))
        .finally(() => {
          if (!this.stopping.signal.aborted) this.sweeper = setTimeout(tick, interval);
        });
    };
    this.sweeper = setTimeout(tick, interval);
  }

  /** One sweep: each pending build nobody uploads (no live lease) is taken over here. Returns the ids taken. */
  async sweep(): Promise<string[]> {
    const { uploads, builds, workerId, logger } = this.options;
    const taken: string[] = [];
    for (const buildId of await uploads.pending()) {
      if (this.archiving.has(buildId) || this.stopping.signal.aborted) continue;
      const record = await builds.get(buildId);
      if (!record) {
        await uploads.done(buildId); // Redis forgot the build: nothing left to upload it from
        continue;
      }
      if (!isTerminal(record.status) || !(await uploads.claim(buildId, workerId, this.leaseMs))) continue;
      // finished meanwhile (done() comes before the owner lets its lease go): nothing to do
      if (!(await uploads.isPending(buildId))) {
        await uploads.release(buildId, workerId);
        continue;
      }
      logger.info({ buildId, worker: record.worker }, "finishing the uploads of a build whose uploader is gone");
      taken.push(buildId);
      void this.track(this.archive(buildId).catch((error: unknown) => logger.warn({ err: error, buildId }, "archiving failed")));
    }
    return taken;
  }

  get location(): string {
    return this.options.artifacts.location;
  }

  /**
   * A tap for the packed context: sha256 of the tar, and a gzip of it spooled to disk (never held
   * in memory). A chunk counts as taken once gzip has consumed it (its write callback), so the
   * packer may reuse the buffer then, and packing follows the slower of Docker and the disk.
   */
  captureContext(buildId: string): ContextCapture {
    const log = this.options.logger.child({ buildId });
    const spoolPath = path.join(this.options.spoolDir, `m1l0-context-${buildId}-${randomUUID()}.tar.gz`);
    const hash = createHash("sha256");
    const gzip = createGzip();
    let spoolFailed = false;
    let readToEnd = false;
    /** writes gzip has not called back for: released at once if the spool fails (a destroyed gzip may never call back) */
    const waiting = new Set<() => void>();
    // gzip runs on libuv's thread pool, so compressing stays off the event loop
    const spooled = pipelineAsync(gzip, createWriteStream(spoolPath)).catch((error: unknown) => {
      spoolFailed = true;
      log.warn({ err: error }, "could not spool the build context; it will not be archived");
      for (const release of waiting) release();
      waiting.clear();
    });
    const tap: ContextTap = {
      write(chunk) {
        hash.update(chunk);
        if (spoolFailed) return undefined;
        return new Promise<void>((resolve) => {
          const release = () => {
            waiting.delete(release);
            resolve();
          };
          waiting.add(release);
          gzip.write(chunk, release);
        });
      },
      end() {
        readToEnd = true;
        gzip.end();
      },
    };

    const finish = async (): Promise<string | undefined> => {
      if (!readToEnd) {
        gzip.destroy();
        await spooled;
        await rm(spoolPath, { force: true });
        return undefined;
      }
      await spooled;
      const hex = hash.digest("hex");
      const digest = `sha256:${hex}`;
      if (spoolFailed) {
        await rm(spoolPath, { force: true });
        await this.mark(buildId, { context: "failed" }, { contextDigest: digest });
        return digest;
      }
      await this.mark(buildId, { context: "pending" }, { contextDigest: digest });
      const key = artifactKeys.context(hex);
      const pending = { key, spool: spoolPath, host: this.options.host };
      await this.options.uploads.set(buildId, { context: pending }).catch((error: unknown) => log.warn({ err: error }, "could not record the pending context upload"));
      const upload = this.track(
        this.withRetries(buildId, "context", () => this.uploadContext(pending))
          .then(() => this.contextDone(buildId, spoolPath))
          .catch(() => undefined),
      );
      this.contextUploads.set(buildId, upload);
      return digest;
    };
    return { tap, finish };
  }

  /**
   * Call when the build reached a terminal status: uploads the complete log (every event of
   * every phase and attempt: the uploaded parts, the spool, Redis's tail) and then the final record.
   */
  archiveBuild(buildId: string): void {
    const { uploads, workerId, logger } = this.options;
    const started = async () => {
      // pending first, lease second: a sweeper never sees a pending build without an owner it could not take
      await uploads.markPending(buildId);
      await uploads.claim(buildId, workerId, this.leaseMs);
      await this.archive(buildId);
    };
    void this.track(started().catch((error: unknown) => logger.warn({ err: error, buildId }, "archiving failed")));
  }

  /** Waits (at most `timeoutMs`) for uploads in flight, then stops retrying (what is left stays pending for the sweepers). */
  async close(timeoutMs = 10_000): Promise<void> {
    clearTimeout(this.sweeper);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    this.stopping.abort();
    clearTimeout(this.sweeper);
  }

  /** Uploads what the build still owes, holding its lease (renewed while it works), then forgets it. */
  private async archive(buildId: string): Promise<void> {
    const { uploads, workerId } = this.options;
    this.archiving.add(buildId);
    const renew = setInterval(() => void uploads.claim(buildId, workerId, this.leaseMs).catch(() => undefined), Math.max(this.leaseMs / 3, 100));
    try {
      await this.sealLog(buildId);
      await this.mark(buildId, { log: "pending", record: "pending" });
      const log = this.withRetries(buildId, "log", async () => {
        await uploadCompleteLog(this.logContext(buildId), await uploads.get(buildId));
      });
      // the record goes last so that the archived copy tells where the other two ended up
      const outcomes = await Promise.allSettled([log, this.finishContext(buildId)]);
      await this.withRetries(buildId, "record", async () => {
        const record = await this.options.builds.require(buildId);
        const archived = { ...record, artifacts: { ...record.artifacts, record: "uploaded" as const } };
        // the record, then its keys in the newest-first index that GET /builds pages through
        await archiveRecord(this.options.artifacts, archived);
      });
      // a log given up on (retries exhausted) stays pending: another worker's sweep may still get it
      if (outcomes[0].status === "fulfilled") await this.forget(buildId, await uploads.get(buildId));
    } finally {
      clearInterval(renew);
      this.archiving.delete(buildId);
      await uploads.release(buildId, workerId).catch(() => undefined);
    }
  }

  /** The context's upload: this process's own when it runs here, else from the spool the state names. */
  private async finishContext(buildId: string): Promise<void> {
    const running = this.contextUploads.get(buildId);
    this.contextUploads.delete(buildId);
    await running;
    const { context } = await this.options.uploads.get(buildId);
    if (!context) return;
    const readable = context.host === this.options.host && (await access(context.spool).then(() => true, () => false));
    await this.withRetries(buildId, "context", async () => {
      if (!readable && !(await this.options.artifacts.exists(context.key))) throw new ContextLost(context.host);
      if (readable) await this.uploadContext(context);
    }).catch(async (error: unknown) => {
      if (!(error instanceof ContextLost)) throw error;
      this.options.logger.warn({ buildId, host: context.host }, error.message);
      await this.mark(buildId, { context: "failed" });
      await this.options.uploads.clear(buildId, "context");
    });
    await this.contextDone(buildId, context.spool);
  }

  private async uploadContext(context: { key: string; spool: string }): Promise<void> {
    // content-addressed: an identical context is stored once
    if (await this.options.artifacts.exists(context.key)) return;
    await this.options.artifacts.put(context.key, createReadStream(context.spool), "application/gzip");
  }

  private async contextDone(buildId: string, spoolPath: string): Promise<void> {
    await this.options.uploads.clear(buildId, "context").catch(() => undefined);
    await rm(spoolPath, { force: true });
  }

  /** Everything is in the store: the spools on this host go, and so does the build's pending entry. */
  private async forget(buildId: string, state: UploadState): Promise<void> {
    if (state.spool?.host === this.options.host) await rm(state.spool.path, { force: true });
    if (state.context?.host === this.options.host) await rm(state.context.spool, { force: true });
    await this.options.uploads.done(buildId);
  }

  /** Runs `upload` until it succeeds (backing off), recording pending → uploaded | failed. */
  private async withRetries(buildId: string, kind: ArtifactKind, upload: () => Promise<void>): Promise<void> {
    const log = this.options.logger.child({ buildId, artifact: kind });
    for (let attempt = 1; ; attempt++) {
      try {
        await upload();
        await this.mark(buildId, { [kind]: "uploaded" });
        if (attempt > 1) log.info({ attempt }, "artifact uploaded after retrying");
        return;
      } catch (error) {
        this.options.onUploadError?.(kind);
        const giveUp = (this.retry.maxAttempts > 0 && attempt >= this.retry.maxAttempts) || this.stopping.signal.aborted;
        log.warn({ err: error, attempt, giveUp, store: this.location }, "artifact upload failed");
        if (giveUp || error instanceof ContextLost) {
          // shutting down leaves it pending (not lost for good: the record says so); exhausted retries fail it
          if (!this.stopping.signal.aborted) await this.mark(buildId, { [kind]: "failed" });
          throw error;
        }
        const delay = Math.min(this.retry.initialDelayMs * 2 ** (attempt - 1), this.retry.maxDelayMs);
        await sleep(delay * (0.75 + Math.random() * 0.5), this.stopping.signal);
      }
    }
  }

  private async mark(buildId: string, statuses: Partial<Record<ArtifactKind, ArtifactUploadStatus>>, patch: { contextDigest?: string } = {}): Promise<void> {
    await this.options.builds
      .update(buildId, (record) => ({ ...record, ...patch, artifacts: { ...record.artifacts, ...statuses } }))
      .catch((error: unknown) => this.options.logger.warn({ err: error, buildId }, "could not record the artifact status"));
  }

  private track<T>(promise: Promise<T>): Promise<T> {
    const settled = promise.then(
      () => undefined,
      () => undefined,
    );
    this.inFlight.add(settled);
    void settled.finally(() => this.inFlight.delete(settled));
    return promise;
  }
}

/** The context's spool was on a host this worker cannot read, and the store does not have it. */
class ContextLost extends Error {
  constructor(host: string) {
    super(`the build context's spool was on host ${host}, which this worker cannot read; the context is not archived`);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}
