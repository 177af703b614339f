import { formatBuildEvent, type BuildEvent } from "@m1l0/config";
import type { BuildStore, EventSink, PendingUploads, StoredEvent, UploadState } from "@m1l0/queue";
import { artifactKeys, type ArtifactStore } from "@m1l0/storage";
import { createReadStream } from "node:fs";
import { open, rm, type FileHandle } from "node:fs/promises";
import { createInterface } from "node:readline";
import type { Logger } from "pino";

/** One spooled line: the stream id of its event, and the line as the archived log holds it. */
export interface SpooledLine {
  id: string;
  text: string;
}

export interface LogSpoolContext {
  buildId: string;
  host: string;
  worker: string;
  builds: BuildStore;
  uploads: PendingUploads;
  artifacts: ArtifactStore;
  /** a part is cut once this many bytes of log are past the last one (at least S3's 5 MiB) */
  partBytes: number;
  logger: Logger;
}

export const LOG_CONTENT_TYPE = "text/plain; charset=utf-8";
const WRITE_BATCH_BYTES = 64 * 1024;
const EVENT_PAGE = 1_000;

/** "1700000000000-3" < "1700000000000-12": stream ids compare as two numbers. */
export function streamIdAfter(a: string, b: string): boolean {
  const [am = 0, as = 0] = a.split("-").map(Number);
  const [bm = 0, bs = 0] = b.split("-").map(Number);
  return am > bm || (am === bm && as > bs);
}

/** Redis's stream after `after`: whether it lost events there to trimming, and its first page. */
export interface TailRead {
  after: string;
  trimmed: boolean;
  page: StoredEvent[];
}

/** The trim check and the first page: one round trip. */
export async function readTail(ctx: Pick<LogSpoolContext, "buildId" | "builds">, after: string): Promise<TailRead> {
  const { trimmed, events } = await ctx.builds.pageAfter(ctx.buildId, after, EVENT_PAGE);
  return { after, trimmed, page: events };
}

/**
 * What the archive still needs after the uploaded parts, in order: the spool's lines past
 * them when the spool is readable here (same host), then whatever Redis's stream holds after
 * the last of those (events the spool never saw; the whole remainder when the spool is on
 * another host). Lines that neither still holds are named in a line of their own, never
 * silently missing. `started` is a readTail begun before `state` was known (the pickup's
 * path); it is used when it starts where the remainder does, else Redis is read again.
 */
export async function* remainingLines(ctx: Pick<LogSpoolContext, "buildId" | "host" | "builds">, state: UploadState, started?: Promise<TailRead>): AsyncGenerator<SpooledLine> {
  let after = state.multipart?.parts.at(-1)?.lastId ?? "0";
  const spool = state.spool;
  let spoolRead = false;
  if (spool && spool.host === ctx.host) {
    try {
      for await (const line of readSpool(spool.path, spool.partEnd)) {
        after = line.id;
        yield line;
      }
      spoolRead = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
  const early = await started?.catch(() => undefined); // a failed early read is read again
  const tail = early?.after === after ? early : await readTail(ctx, after);
  if (tail.trimmed) {
    const where = spool && !spoolRead ? `worker ${spool.worker} (host ${spool.host}), whose spool is not readable here,` : "the build";
    yield { id: after, text: `${new Date().toISOString()} [build] (log lines that ${where} wrote after the last uploaded part were lost: Redis's live tail no longer holds them)` };
  }
  for (const item of tail.page) yield { id: item.id, text: formatBuildEvent(item.event) };
  // later pages from the last event read: events appended since the first page are read too
  const last = tail.page.at(-1);
  if (last) for await (const item of ctx.builds.eventsAfter(ctx.buildId, last.id, EVENT_PAGE)) yield { id: item.id, text: formatBuildEvent(item.event) };
}

async function* readSpool(path: string, start: number): AsyncGenerator<SpooledLine> {
  const lines = createInterface({ input: createReadStream(path, { start, encoding: "utf8" }), crlfDelay: Infinity });
  for await (const raw of lines) {
    const space = raw.indexOf(" ");
    if (space > 0) yield { id: raw.slice(0, space), text: raw.slice(space + 1) };
  }
}

/**
 * A build's log as this worker writes it: every event it appends to the build's stream goes
 * to a spool file (`<stream id> <line>`), in order; each time `partBytes` of log have gathered,
 * they go to S3 as the next part of the log's multipart upload, and Redis records the part
 * (so a crash loses at most the part being filled, and only when the spool's host is gone).
 */
export class LogSpool {
  private chain: Promise<void> = Promise.resolve();
  private file: FileHandle | undefined;
  private size = 0;
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private lastId = "0";
  private sincePart = 0;
  private partEnd = 0;
  private readonly cuts: Array<{ end: number; lastId: string }> = [];
  private uploading: Promise<void> | undefined;
  private stopped = false;
  private broken = false;
  private wake: (() => void) | undefined;
  private state: UploadState = {};
  readonly sink: EventSink = (streamId, event) => this.enqueue(streamId, event);

  constructor(
    private readonly ctx: LogSpoolContext,
    readonly path: string,
  ) {}

  /**
   * Starts spooling: seeds the spool with what came before (an earlier attempt's remainder,
   * the queued status), then follows the store. Awaited before the attempt appends anything,
   * so the seed and the sink neither overlap nor leave a gap.
   */
  async open(): Promise<void> {
    try {
      // before the pickup's `fetching`, so in one round trip: the upload state, the file's creation,
      // and Redis's stream from its start (what a first attempt, with no parts, reads next)
      const fromStart = readTail(this.ctx, "0");
      fromStart.catch(() => undefined); // never unhandled: remainingLines reads again when it failed
      const [state] = await Promise.all([this.ctx.uploads.get(this.ctx.buildId), open(this.path, "w").then((file) => void (this.file = file))]);
      const previous = state.spool;
      this.state = { ...state, spool: { host: this.ctx.host, path: this.path, worker: this.ctx.worker, partEnd: 0 } };
      for await (const line of remainingLines(this.ctx, state, fromStart)) await this.append(line);
      // where the spool is (for a sweep on this host after a crash) is recorded as the first step
      // of the write chain, off the pickup's path: every part's record, which comes later, says it too
      const spool = this.state.spool;
      this.step(async () => {
        await this.ctx.uploads.set(this.ctx.buildId, { spool });
        if (previous && previous.host === this.ctx.host && previous.path !== this.path) await rm(previous.path, { force: true });
      });
    } catch (error) {
      this.fail(error);
    } finally {
      this.ctx.builds.attachEventSink(this.ctx.buildId, this.sink);
    }
  }

  /** Writes what is queued, stops cutting parts and closes the file; what is not in a part stays in the spool for the final upload. */
  async seal(): Promise<void> {
    this.ctx.builds.detachEventSink(this.ctx.buildId, this.sink);
    this.step(() => this.flush());
    await this.chain;
    this.stopped = true;
    this.wake?.();
    await this.uploading;
    await this.file?.close().catch(() => undefined);
    this.file = undefined;
  }

  private enqueue(streamId: Promise<string>, event: BuildEvent): void {
    this.step(async () => {
      // an event Redis refused is still the log's: it keeps the previous id's place
      const id = await streamId.catch(() => this.lastId);
      await this.append({ id, text: formatBuildEvent(event) });
    });
  }

  private step(work: () => Promise<void>): void {
    this.chain = this.chain.then(async () => {
      if (this.broken) return;
      try {
        await work();
      } catch (error) {
        this.fail(error);
      }
    });
  }

  private fail(error: unknown): void {
    // Redis's tail and the parts remain; the final upload rebuilds what it can from them
    this.broken = true;
    this.ctx.logger.warn({ err: error, buildId: this.ctx.buildId, spool: this.path }, "log spool failed; the archived log falls back to Redis's tail");
  }

  private async append(line: SpooledLine): Promise<void> {
    const bytes = Buffer.from(`${line.id} ${line.text}\n`, "utf8");
    // written in batches: one write a line would fall behind a chatty RUN step
    this.buffered.push(bytes);
    this.bufferedBytes += bytes.length;
    this.size += bytes.length;
    this.lastId = line.id;
    this.sincePart += Buffer.byteLength(line.text, "utf8") + 1;
    if (this.bufferedBytes >= WRITE_BATCH_BYTES) await this.flush();
    if (this.sincePart >= this.ctx.partBytes && this.state.spool) {
      await this.flush(); // the part is read back from the file
      this.cuts.push({ end: this.size, lastId: this.lastId });
      this.sincePart = 0;
      this.uploading ??= this.uploadCuts().finally(() => (this.uploading = undefined));
    }
  }

  private async flush(): Promise<void> {
    if (this.bufferedBytes === 0) return;
    const batch = Buffer.concat(this.buffered);
    this.buffered = [];
    this.bufferedBytes = 0;
    await this.file!.write(batch);
  }

  /** Uploads each cut as the next part, in order; a failing S3 is retried until the spool is sealed. */
  private async uploadCuts(): Promise<void> {
    const key = artifactKeys.log(this.ctx.buildId);
    for (let failures = 0; this.cuts.length > 0 && !this.stopped; ) {
      const cut = this.cuts[0]!;
      try {
        const body = await readStripped(this.path, this.partEnd, cut.end);
        const multipart = this.state.multipart ?? { uploadId: await this.ctx.artifacts.startMultipart(key, LOG_CONTENT_TYPE), parts: [] };
        this.state.multipart = multipart;
        const partNumber = multipart.parts.length + 1;
        const etag = await this.ctx.artifacts.putPart(key, multipart.uploadId, partNumber, body);
        multipart.parts.push({ partNumber, etag, lastId: cut.lastId });
        this.partEnd = cut.end;
        this.state.spool = { ...this.state.spool!, partEnd: cut.end };
        await this.ctx.uploads.set(this.ctx.buildId, { multipart, spool: this.state.spool });
        this.cuts.shift();
        failures = 0;
      } catch (error) {
        failures++;
        this.ctx.logger.warn({ err: error, buildId: this.ctx.buildId, failures }, "log part upload failed; retrying");
        await new Promise<void>((resolve) => {
          this.wake = resolve;
          setTimeout(resolve, Math.min(1_000 * 2 ** (failures - 1), 30_000)).unref();
        });
      }
    }
  }
}

/** The spool's bytes [start, end) as the archived log: each line without its stream id. */
async function readStripped(path: string, start: number, end: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const line of readSpool(path, start)) {
    chunks.push(Buffer.from(`${line.text}\n`, "utf8"));
    start += Buffer.byteLength(`${line.id} ${line.text}\n`, "utf8");
    if (start >= end) break;
  }
  return Buffer.concat(chunks);
}
