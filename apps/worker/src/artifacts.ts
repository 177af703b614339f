import type { ArtifactUploadStatus, BuildArtifacts } from "@m1l0/config";
import type { BuildStore } from "@m1l0/queue";
import { archiveRecord, artifactKeys, type ArtifactStore } from "@m1l0/storage";
import { createHash, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { rm } from "node:fs/promises";
import path from "node:path";
import { Transform, pipeline, type Readable } from "node:stream";
import { pipeline as pipelineAsync } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { Logger } from "pino";

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
  /** where packed contexts are spooled while Docker reads them */
  spoolDir: string;
  logger: Logger;
  retry?: Partial<RetryPolicy>;
  onUploadError?: (kind: ArtifactKind) => void;
}

export interface ContextCapture {
  /** the context to hand to Docker: the same bytes, passed through */
  stream: Readable;
  /**
   * Call once Docker is done with the stream (success or not). When Docker read the whole
   * context: records its digest and starts the background upload, returning `sha256:<hex>`.
   * Never throws: archiving must not fail a build.
   */
  finish(): Promise<string | undefined>;
}

const DEFAULT_RETRY: RetryPolicy = { initialDelayMs: 1_000, maxDelayMs: 30_000, maxAttempts: 0 };
const EVENTS_PAGE = 1_000;

/**
 * Archives what a build leaves behind — its context, its log and its final record — in the
 * artifact store, in the background and with retries, so a slow or unreachable store never
 * fails or stalls a build. The record's `artifacts` field says how far the uploads got.
 */
export class ArtifactArchiver {
  private readonly retry: RetryPolicy;
  /** per build: the context upload, which the log/record upload waits for */
  private readonly contextUploads = new Map<string, Promise<void>>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly stopping = new AbortController();

  constructor(private readonly options: ArtifactArchiverOptions) {
    this.retry = { ...DEFAULT_RETRY, ...options.retry };
  }

  get location(): string {
    return this.options.artifacts.location;
  }

  /** Tees the packed context: sha256 of the tar, and a gzip of it spooled to disk (never held in memory). */
  captureContext(buildId: string, context: Readable): ContextCapture {
    const log = this.options.logger.child({ buildId });
    const spoolPath = path.join(this.options.spoolDir, `m1l0-context-${buildId}-${randomUUID()}.tar.gz`);
    const hash = createHash("sha256");
    const gzip = createGzip();
    let spoolFailed = false;
    let readToEnd = false;
    let waitingForDrain: (() => void) | undefined;
    // gzip runs on libuv's thread pool, so compressing stays off the event loop
    const spooled = pipelineAsync(gzip, createWriteStream(spoolPath)).catch((error: unknown) => {
      spoolFailed = true;
      log.warn({ err: error }, "could not spool the build context; it will not be archived");
      waitingForDrain?.();
    });
    const tee = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk);
        if (spoolFailed || gzip.write(chunk)) return callback(null, chunk);
        // follow the slower of Docker and the disk, so the spool never buffers a whole context
        waitingForDrain = () => {
          waitingForDrain = undefined;
          callback(null, chunk);
        };
        gzip.once("drain", () => waitingForDrain?.());
      },
      flush(callback) {
        readToEnd = true;
        gzip.end();
        callback();
      },
    });
    pipeline(context, tee, () => undefined);

    const finish = async (): Promise<string | undefined> => {
      if (!readToEnd) {
        gzip.destroy();
        tee.destroy();
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
      const upload = this.track(
        this.withRetries(buildId, "context", async () => {
          // content-addressed: an identical context is stored once
          if (await this.options.artifacts.exists(key)) {
            log.debug({ key }, "context already archived");
            return;
          }
          await this.options.artifacts.put(key, createReadStream(spoolPath), "application/gzip");
        })
          .catch(() => undefined)
          .finally(() => rm(spoolPath, { force: true })),
      );
      this.contextUploads.set(buildId, upload);
      return digest;
    };
    return { stream: tee, finish };
  }

  /**
   * Call when the build reached a terminal status: uploads the complete log (every event of
   * every phase and attempt, from the build's event stream) and then the final record.
   */
  archiveBuild(buildId: string): void {
    void this.track(this.archive(buildId).catch((error: unknown) => this.options.logger.warn({ err: error, buildId }, "archiving failed")));
  }

  /** Waits (at most `timeoutMs`) for uploads in flight, then stops retrying. */
  async close(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
    this.stopping.abort();
  }

  private async archive(buildId: string): Promise<void> {
    const context = this.contextUploads.get(buildId);
    this.contextUploads.delete(buildId);
    await this.mark(buildId, { log: "pending", record: "pending" });
    const { artifacts, builds } = this.options;
    const log = this.withRetries(buildId, "log", async () => {
      await artifacts.put(artifactKeys.log(buildId), await builds.renderLog(buildId, EVENTS_PAGE), "text/plain; charset=utf-8");
    });
    // the record goes last so that the archived copy tells where the other two ended up
    await Promise.all([log.catch(() => undefined), context?.catch(() => undefined)]);
    await this.withRetries(buildId, "record", async () => {
      const record = await builds.require(buildId);
      const archived = { ...record, artifacts: { ...record.artifacts, record: "uploaded" as const } };
      // the record, then its keys in the newest-first index that GET /builds pages through
      await archiveRecord(artifacts, archived);
    }).catch(() => undefined);
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
        if (giveUp) {
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
