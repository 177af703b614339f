import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import zlib from "node:zlib";
import type { GitProgressEvent } from "isomorphic-git";
import { hashInflated, STREAM_OBJECT_BYTES } from "./inflate-stream.js";
import { MissingBaseError, ObjectTooLargeError, objectLimit, PackReader, parseEntryHeader, TYPE_NAMES } from "./pack.js";

/** Bytes of the pack read at a time while scanning it (a larger object is read whole). */
const WINDOW_BYTES = 4 * 1024 * 1024;
/** Objects scanned between checks of the signal (the scan is synchronous work between reads). */
const SIGNAL_EVERY = 256;

export class CorruptPackError extends Error {
  constructor(message: string) {
    super(`the server sent a corrupt pack: ${message}`);
    this.name = "CorruptPackError";
  }
}

interface Delta {
  offset: number;
  /** the base's offset (ofs-delta) or object id (ref-delta) */
  base: number | string;
}

/** A sliding read buffer over the pack file, reused while what is asked for fits. */
class PackWindow {
  private storage = Buffer.allocUnsafe(0);
  private buffer = this.storage;
  private start = 0;

  constructor(
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  /** Bytes [position, position + length) of the file; fewer only at its end. */
  async at(position: number, length: number): Promise<Buffer> {
    const end = Math.min(position + length, this.size);
    if (position < this.start || end > this.start + this.buffer.length) {
      const want = Math.max(end - position, Math.min(WINDOW_BYTES, this.size - position));
      if (this.storage.length < want) this.storage = Buffer.allocUnsafe(Math.max(want, WINDOW_BYTES));
      const { bytesRead } = await this.handle.read(this.storage, 0, want, position);
      this.buffer = this.storage.subarray(0, bytesRead);
      this.start = position;
    }
    return this.buffer.subarray(position - this.start, end - this.start);
  }
}

function objectId(type: number, data: Buffer): string {
  return createHash("sha1").update(`${TYPE_NAMES[type]} ${data.length}\0`).update(data).digest("hex");
}

/** Inflates the entry data starting at `start`, returning how many compressed bytes it took. */
async function inflatedLength(window: PackWindow, start: number, size: number): Promise<{ data: Buffer; consumed: number }> {
  // deflate never grows data by more than a few bytes per 16 KiB block: one read is nearly always enough
  for (let want = size + (size >>> 10) + 64; ; want *= 2) {
    const input = await window.at(start, want);
    try {
      const { buffer, engine } = zlib.inflateSync(input, { info: true, maxOutputLength: Math.max(size, 1) }) as unknown as {
        buffer: Buffer;
        engine: { bytesWritten: number };
      };
      if (buffer.length !== size) throw new CorruptPackError(`an entry at offset ${start} inflates to ${buffer.length} bytes, not ${size}`);
      return { data: buffer, consumed: engine.bytesWritten };
    } catch (error) {
      const truncated = (error as { code?: string }).code === "Z_BUF_ERROR" && start + input.length < window.size;
      if (!truncated) throw error instanceof CorruptPackError ? error : new CorruptPackError(`an entry at offset ${start} does not inflate (${(error as Error).message})`);
    }
  }
}

/**
 * Indexes a pack file the way `git index-pack` does, natively (node:zlib, node:crypto) and with
 * memory bounded by the largest object: a first pass reads the entries in order, hashing every
 * whole object and noting each delta's base; a second resolves the deltas through a
 * PackReader (which caches bases) and hashes their results. Blobs or delta results larger
 * than `limit` (other objects: objectLimit) are refused before they are inflated
 * (ObjectTooLargeError).
 */
export async function indexPack(
  handle: FileHandle,
  options: { limit: number; signal: AbortSignal; onProgress: (event: GitProgressEvent) => void },
): Promise<{ reader: PackReader; objects: number }> {
  const size = (await handle.stat()).size;
  const window = new PackWindow(handle, size);
  const header = await window.at(0, 12);
  if (header.length < 12 || header.toString("latin1", 0, 4) !== "PACK") throw new CorruptPackError("it does not start with a pack header");
  const version = header.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new CorruptPackError(`pack version ${version} is not supported`);
  const count = header.readUInt32BE(8);
  const trailer = size - 20;
  const offsets = new Map<string, number>();
  const entryOffsets: number[] = [];
  const deltas: Delta[] = [];

  let position = 12;
  for (let index = 0; index < count; index++) {
    if (index % SIGNAL_EVERY === 0) options.signal.throwIfAborted();
    if (position >= trailer) throw new CorruptPackError(`it ends after ${index} of its ${count} objects`);
    const offset = position;
    entryOffsets.push(offset);
    const { type, size: objectSize, base, dataStart } = parseEntryHeader(await window.at(offset, 64));
    if (base) deltas.push({ offset, base: "distance" in base ? offset - base.distance : base.oid });
    else if (TYPE_NAMES[type] === undefined) throw new CorruptPackError(`an entry at offset ${offset} has object type ${type}`);
    // a delta's result type is known only once its base is: bound it by the larger limit here, the reader checks its result
    if (objectSize > objectLimit(base ? 0 : type, options.limit)) throw new ObjectTooLargeError(objectSize);
    const whole = !base;
    let consumed: number;
    if (whole && objectSize >= STREAM_OBJECT_BYTES) {
      const hash = createHash("sha1").update(`${TYPE_NAMES[type]} ${objectSize}\0`);
      consumed = await hashInflated(handle, offset + dataStart, trailer, objectSize, hash).catch((error: unknown) => {
        throw new CorruptPackError(`an entry at offset ${offset} does not inflate (${(error as Error).message})`);
      });
      offsets.set(hash.digest("hex"), offset);
    } else {
      const inflated = await inflatedLength(window, offset + dataStart, objectSize);
      consumed = inflated.consumed;
      if (whole) offsets.set(objectId(type, inflated.data), offset);
    }
    position = offset + dataStart + consumed;
    options.onProgress({ phase: "Indexing objects", loaded: index + 1, total: count });
  }
  if (position !== trailer) throw new CorruptPackError(`${trailer - position} bytes follow its last object`);

  const reader = PackReader.forPack(handle, entryOffsets, trailer, offsets, options.limit);
  await resolveDeltas(reader, deltas, offsets, options);
  return { reader, objects: count };
}

/** Hashes every delta's result; a ref-delta waits until its base's id is known. */
async function resolveDeltas(
  reader: PackReader,
  deltas: Delta[],
  offsets: Map<string, number>,
  options: { signal: AbortSignal; onProgress: (event: GitProgressEvent) => void },
): Promise<void> {
  let pending = deltas;
  let resolved = 0;
  while (pending.length > 0) {
    const waiting: Delta[] = [];
    for (const delta of pending) {
      if (resolved % SIGNAL_EVERY === 0) options.signal.throwIfAborted();
      try {
        const object = await reader.objectAt(delta.offset);
        offsets.set(objectId(object.type, object.data), delta.offset);
      } catch (error) {
        if (!(error instanceof MissingBaseError)) throw error;
        waiting.push(delta);
        continue;
      }
      options.onProgress({ phase: "Resolving deltas", loaded: ++resolved, total: deltas.length });
    }
    if (waiting.length === pending.length) throw new CorruptPackError(`${waiting.length} deltas have a base the pack does not hold`);
    pending = waiting;
  }
}
