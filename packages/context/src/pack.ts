import { BuilderError, isBuilderError } from "@m1l0/config";
import { lstat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { setImmediate as nextTurn } from "node:timers/promises";
import { describeError, type ContextFilter } from "./filter.js";
import { normalizeRelativePath, TarProducer, type PackOptions } from "./producer.js";

export { DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, FIXED_MTIME, type ExtraFile, type PackOptions } from "./producer.js";

/**
 * Sees every chunk of the archive, in order, before its consumer does (the worker's sha256 and
 * gzip spool of the context). `write` may return a promise: the chunk is not handed on, nor its
 * buffer reused, before it settles. `end` is called once the whole archive has been produced.
 */
export interface ContextTap {
  write(chunk: Buffer): Promise<void> | undefined;
  end(): void;
}

/**
 * Size of each chunk (and the stream's high-water mark): file content is read straight into it.
 * 128 KiB measured the lowest system time among 64 KiB–1 MiB.
 */
const CHUNK_SIZE = 128 * 1024;
/**
 * Chunks a pipe() keeps in flight: each is reused once its writes have called back, so packing
 * holds at most this many × CHUNK_SIZE however large the context, and V8 has no buffers to collect.
 */
const POOL_CHUNKS = 8;
/**
 * A consumer that takes chunks as fast as they come (for await, or a writable that calls back at
 * once) would otherwise keep the producer on process.nextTick forever and starve timers and I/O of
 * everything else in the process: after this many bytes the next chunk waits for one turn of the
 * event loop.
 */
const YIELD_EVERY_BYTES = 4 * 1024 * 1024;

/**
 * An uncompressed tar of the filtered tree, produced while it is consumed, so memory does not grow
 * with the context. Errors destroy the stream with a BuilderError ("ARCHIVE_INVALID" for an
 * unreadable tree or exceeded caps).
 *
 * Two ways to consume it, the same bytes either way:
 * - read it (for await, 'data', a Transform piped from it by `stream.pipeline`... any Readable use):
 *   each chunk is a fresh 128 KiB Buffer, since a reader may keep what it was given;
 * - `pipe(writable)` (what dockerode does with a build context): it writes with callbacks and
 *   reuses a pool of POOL_CHUNKS buffers, a buffer going back to the pool once the writable (and
 *   the tap) called back for it. Without that, each chunk would stay memory until V8 collected it,
 *   which it schedules by ArrayBuffer growth: tens of MiB of RSS, and collections, per build.
 */
export function packContext(root: string, options: PackOptions & { tap?: ContextTap }): Readable {
  return new ContextStream(new TarProducer(root, options), options.tap);
}

class ContextStream extends Readable {
  readonly #producer: TarProducer;
  readonly #tap: ContextTap | undefined;
  #sinceYield = 0;
  #piped = false;

  constructor(producer: TarProducer, tap: ContextTap | undefined) {
    super({ highWaterMark: CHUNK_SIZE });
    this.#producer = producer;
    this.#tap = tap;
  }

  override _read(): void {
    if (this.#sinceYield >= YIELD_EVERY_BYTES) {
      this.#sinceYield = 0;
      setImmediate(() => {
        if (!this.destroyed) this._read();
      });
      return;
    }
    try {
      const { chunk, done } = this.#fill(Buffer.allocUnsafe(CHUNK_SIZE));
      const deliver = () => {
        if (this.destroyed) return;
        if (chunk.length > 0) this.push(chunk);
        if (done) this.#end();
      };
      const tapped = chunk.length > 0 ? this.#tap?.write(chunk) : undefined;
      if (tapped) tapped.then(deliver, (error: unknown) => this.#fail(error));
      else deliver();
    } catch (error) {
      this.#fail(error);
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#producer.close();
    callback(error);
  }

  /** Writes the archive into `destination` with reused buffers (see packContext); once only, and only into a stream nothing has read from. */
  override pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    if (this.#piped || this.readableDidRead || this.readableFlowing !== null) {
      throw new BuilderError("INTERNAL", "a packed build context can be piped once, into one destination, and only before anything read it");
    }
    this.#piped = true;
    void this.#writeInto(destination, options?.end !== false);
    return destination;
  }

  async #writeInto(destination: NodeJS.WritableStream, end: boolean): Promise<void> {
    const free: Buffer[] = [];
    let allocated = 0;
    let inFlight = 0;
    /** set when the destination is gone: stop quietly, as Readable.pipe does (its owner reports why) */
    let gone = false;
    let failure: unknown;
    let wake: (() => void) | undefined;
    const settle = () => {
      const waiting = wake;
      wake = undefined;
      waiting?.();
    };
    const waitForSettle = () => new Promise<void>((resolve) => (wake = resolve));
    const onGone = () => {
      gone = true;
      settle();
    };
    // a destroyed writable closes; its owner has the error (Readable.pipe, too, only stops then)
    destination.once("close", onGone);
    try {
      for (let done = false; !done; ) {
        if (gone || failure !== undefined || this.destroyed) break;
        const buffer = free.pop() ?? (allocated < POOL_CHUNKS ? (allocated++, Buffer.allocUnsafe(CHUNK_SIZE)) : undefined);
        if (!buffer) {
          await waitForSettle();
          continue;
        }
        const filled = this.#fill(buffer);
        done = filled.done;
        if (filled.chunk.length > 0) {
          inFlight++;
          this.#deliverTo(destination, filled.chunk).then(
            () => free.push(buffer),
            (error: unknown) => (error instanceof DestinationError ? (gone = true) : (failure ??= error)),
          ).finally(() => {
            inFlight--;
            settle();
          });
        }
        if (this.#sinceYield >= YIELD_EVERY_BYTES) {
          this.#sinceYield = 0;
          await nextTurn();
        }
      }
      while (inFlight > 0 && !gone && failure === undefined && !this.destroyed) await waitForSettle();
      if (failure !== undefined) throw failure;
      if (gone || this.destroyed) {
        this.destroy();
        return;
      }
      this.#tap?.end();
      if (end) destination.end();
      // ends this side too, so 'end' and 'close' come as for any consumed stream
      this.push(null);
      this.resume();
    } catch (error) {
      this.#fail(error);
    } finally {
      destination.removeListener("close", onGone);
    }
  }

  /** Resolves once the destination and the tap have both called back for `chunk`. */
  #deliverTo(destination: NodeJS.WritableStream, chunk: Buffer): Promise<void> {
    const written = new Promise<void>((resolve, reject) => {
      destination.write(chunk, (error) => (error ? reject(new DestinationError(error)) : resolve()));
    });
    const tapped = this.#tap?.write(chunk);
    return tapped ? Promise.all([written, tapped]).then(() => undefined) : written;
  }

  /** The next chunk of the archive, in (a prefix of) `buffer`. */
  #fill(buffer: Buffer): { chunk: Buffer; done: boolean } {
    const { used, done } = this.#producer.fill(buffer);
    this.#sinceYield += used;
    return { chunk: used === buffer.length ? buffer : buffer.subarray(0, used), done };
  }

  #end(): void {
    this.#tap?.end();
    this.push(null);
  }

  /** Destroys the stream with a BuilderError (_destroy closes the producer's file). */
  #fail(error: unknown): void {
    this.destroy(isBuilderError(error) ? error : new BuilderError("ARCHIVE_INVALID", `cannot pack the build context: ${describeError(error)}`, { cause: error }));
  }
}

/** A write the destination refused (it was destroyed or failed): the destination's owner reports that, not the packer. */
class DestinationError extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause });
  }
}

/** true when relPath exists as a regular file (not a symlink, under no symlinked directory) in root and is not ignored. */
export async function contextHasFile(root: string, filter: ContextFilter, relPath: string): Promise<boolean> {
  const normalized = normalizeRelativePath(relPath);
  if (normalized === null || filter.isIgnored(normalized)) return false;
  const segments = normalized.split("/");
  let current = path.resolve(root);
  for (const [index, segment] of segments.entries()) {
    current = path.join(current, segment);
    const stats = await lstat(current).catch(() => null);
    const isLast = index === segments.length - 1;
    if (!stats || (isLast ? !stats.isFile() : !stats.isDirectory())) return false;
  }
  return true;
}
