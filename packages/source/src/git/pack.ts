import { open, readFile, readdir, type FileHandle } from "node:fs/promises";
import path from "node:path";
import zlib from "node:zlib";
import { inflateRange, STREAM_OBJECT_BYTES } from "./inflate-stream.js";

const OFS_DELTA = 6;
const REF_DELTA = 7;
/** Object type names by pack type number (what an object id hashes: `<type> <size>\0<content>`). */
export const TYPE_NAMES: Readonly<Record<number, string>> = { 1: "commit", 2: "tree", 3: "blob", 4: "tag" };
/** A pack entry's header: the object type and size, a delta's base, and where the compressed data starts. */
export interface EntryHeader {
  type: number;
  size: number;
  /** an ofs-delta's distance back to its base, or a ref-delta's base id */
  base?: { distance: number } | { oid: string };
  dataStart: number;
}

/** Parses the header at the start of `entry` (a type-and-size varint, then a delta's base). */
export function parseEntryHeader(entry: Buffer): EntryHeader {
  let position = 0;
  let byte = entry[position++]!;
  const type = (byte >> 4) & 7;
  let size = byte & 15;
  for (let shift = 4; byte & 0x80; shift += 7) {
    byte = entry[position++]!;
    size += (byte & 0x7f) * 2 ** shift;
  }
  if (type === OFS_DELTA) {
    byte = entry[position++]!;
    let distance = byte & 0x7f;
    while (byte & 0x80) {
      byte = entry[position++]!;
      distance = (distance + 1) * 128 + (byte & 0x7f);
    }
    return { type, size, base: { distance }, dataStart: position };
  }
  if (type === REF_DELTA) return { type, size, base: { oid: entry.toString("hex", position, position + 20) }, dataStart: position + 20 };
  return { type, size, dataStart: position };
}

/** Inflated delta bases kept for the next delta of the same chain (text files deltify against each other). */
const BASE_CACHE_BYTES = 32 * 1024 * 1024;

interface PackFile {
  handle: FileHandle;
  /** object id → offset of its entry in the pack */
  offsets: Map<string, number>;
  /** where each entry ends: the next entry's offset, or the trailer's */
  ends: Map<number, number>;
}

/** Reads the object offsets of a version-2 pack index (what isomorphic-git and git write). */
function parseIndex(index: Buffer): Map<string, number> {
  if (index.readUInt32BE(0) !== 0xff744f63 || index.readUInt32BE(4) !== 2) throw new Error("unsupported pack index version");
  const count = index.readUInt32BE(8 + 255 * 4);
  const names = 8 + 256 * 4;
  const smallOffsets = names + count * 20 + count * 4;
  const largeOffsets = smallOffsets + count * 4;
  const offsets = new Map<string, number>();
  for (let entry = 0; entry < count; entry++) {
    const small = index.readUInt32BE(smallOffsets + entry * 4);
    const offset = small & 0x80000000 ? Number(index.readBigUInt64BE(largeOffsets + (small & 0x7fffffff) * 8)) : small;
    offsets.set(index.toString("hex", names + entry * 20, names + entry * 20 + 20), offset);
  }
  return offsets;
}

/**
 * Commits, trees and tags are not files, so the checkout's cap does not bound them; this does
 * (git itself has none, but a tree of a million entries is some 40 MB).
 */
const NON_BLOB_LIMIT = 256 * 1024 * 1024;
const BLOB = 3;

/** The most bytes an object of `type` may have under a reader limit on files (`limit`); deltas count as their largest result. */
export function objectLimit(type: number, limit: number): number {
  return type === BLOB ? limit : Math.max(limit, NON_BLOB_LIMIT);
}

/** An object (or a delta's result) larger than the reader's limit, refused before it is inflated or built. */
export class ObjectTooLargeError extends Error {
  constructor(readonly size: number) {
    super(`a git object of ${size} bytes is larger than allowed`);
    this.name = "ObjectTooLargeError";
  }
}

/** A ref-delta whose base's id is not (yet) known to the reader. */
export class MissingBaseError extends Error {
  constructor(readonly oid: string) {
    super(`delta base ${oid} is not in the pack`);
    this.name = "MissingBaseError";
  }
}

/** The result size a delta announces (its second header varint), read before it is applied. */
function deltaResultSize(delta: Buffer): number {
  let position = 0;
  let value = 0;
  for (let part = 0; part < 2; part++) {
    value = 0;
    let shift = 0;
    let byte: number;
    do {
      byte = delta[position++] ?? 0;
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80 && position < delta.length);
  }
  return value;
}

/** Applies a git delta (copy and insert instructions) to its base. */
function applyDelta(delta: Buffer, base: Buffer): Buffer {
  let position = 0;
  const varint = () => {
    let value = 0;
    let shift = 0;
    let byte: number;
    do {
      byte = delta[position++]!;
      value += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return value;
  };
  if (varint() !== base.length) throw new Error("delta base size mismatch");
  const result = Buffer.allocUnsafe(varint());
  let written = 0;
  while (position < delta.length) {
    const op = delta[position++]!;
    if (op & 0x80) {
      let offset = 0;
      let size = 0;
      for (let bit = 0; bit < 4; bit++) if (op & (1 << bit)) offset += delta[position++]! * 2 ** (8 * bit);
      for (let bit = 0; bit < 3; bit++) if (op & (1 << (4 + bit))) size += delta[position++]! * 2 ** (8 * bit);
      if (size === 0) size = 0x10000;
      written += base.copy(result, written, offset, offset + size);
    } else if (op > 0) {
      written += delta.copy(result, written, position, position + op);
      position += op;
    } else {
      throw new Error("invalid delta instruction");
    }
  }
  if (written !== result.length) throw new Error("delta result size mismatch");
  return result;
}

/**
 * Reads objects straight from the fetched pack files, inflating natively (node:zlib) and reading
 * only each object's bytes: isomorphic-git's reader tries a loose object file and lists the pack
 * directory for every object, inflates in JavaScript (pako) and hashes the result again, which
 * the pack's indexing already did on receipt. Undefined for an object in no pack (the caller
 * then asks isomorphic-git).
 */
export class PackReader {
  private readonly bases = new Map<number, { type: number; data: Buffer }>();
  private baseBytes = 0;

  /**
   * @param limit blobs (and delta results that are blobs) larger than this are refused (ObjectTooLargeError)
   *   before their bytes are allocated: a small pack can announce gigabytes
   */
  private constructor(
    private readonly packs: PackFile[],
    private readonly limit: number,
  ) {}

  /**
   * A reader of one pack indexed by our own fetch: `offsets` may still be filling in (the
   * indexer resolves deltas through this reader and adds each id as it is known).
   */
  static forPack(handle: FileHandle, entryOffsets: readonly number[], trailer: number, offsets: Map<string, number>, limit: number): PackReader {
    const ends = new Map(entryOffsets.map((offset, index) => [offset, entryOffsets[index + 1] ?? trailer]));
    return new PackReader([{ handle, offsets, ends }], limit);
  }

  static async open(gitDir: string): Promise<PackReader> {
    const dir = path.join(gitDir, "objects", "pack");
    const names = await readdir(dir).catch(() => [] as string[]);
    const packs: PackFile[] = [];
    for (const name of names.filter((entry) => entry.endsWith(".idx"))) {
      const offsets = parseIndex(await readFile(path.join(dir, name)));
      const handle = await open(path.join(dir, name.replace(/\.idx$/, ".pack")));
      const trailer = (await handle.stat()).size - 20;
      const sorted = [...offsets.values()].sort((left, right) => left - right);
      const ends = new Map(sorted.map((offset, index) => [offset, sorted[index + 1] ?? trailer]));
      packs.push({ handle, offsets, ends });
    }
    return new PackReader(packs, Number.POSITIVE_INFINITY);
  }

  async read(oid: string): Promise<Buffer | undefined> {
    return (await this.readObject(oid))?.data;
  }

  /** The object with its pack type (1 commit, 2 tree, 3 blob, 4 tag). */
  async readObject(oid: string): Promise<{ type: number; data: Buffer } | undefined> {
    for (const pack of this.packs) {
      const offset = pack.offsets.get(oid);
      if (offset !== undefined) return this.readAt(pack, offset);
    }
    return undefined;
  }

  /**
   * The object's bytes: a large whole object as chunks inflated from the pack slice by slice
   * (never held at once), anything else read whole. Undefined for an object in no pack.
   */
  async readStream(oid: string): Promise<{ type: number; chunks: Buffer | AsyncIterable<Buffer> } | undefined> {
    for (const pack of this.packs) {
      const offset = pack.offsets.get(oid);
      if (offset === undefined) continue;
      const end = pack.ends.get(offset);
      if (end === undefined) throw new Error(`no pack entry at offset ${offset}`);
      const head = Buffer.allocUnsafe(Math.min(32, end - offset));
      await pack.handle.read(head, 0, head.length, offset);
      const { type, size, base, dataStart } = parseEntryHeader(head);
      if (!base && size >= STREAM_OBJECT_BYTES) {
        if (size > objectLimit(type, this.limit)) throw new ObjectTooLargeError(size);
        return { type, chunks: inflateRange(pack.handle, offset + dataStart, end, size) };
      }
      const object = await this.readAt(pack, offset);
      return { type: object.type, chunks: object.data };
    }
    return undefined;
  }

  /** The object whose entry starts at `offset` of the first pack, deltas resolved. */
  async objectAt(offset: number): Promise<{ type: number; data: Buffer }> {
    const pack = this.packs[0];
    if (!pack) throw new Error("the reader holds no pack");
    return this.readAt(pack, offset);
  }

  async close(): Promise<void> {
    await Promise.all(this.packs.map((pack) => pack.handle.close()));
  }

  private async readAt(pack: PackFile, offset: number): Promise<{ type: number; data: Buffer }> {
    const cached = this.bases.get(offset);
    if (cached) return cached;
    const end = pack.ends.get(offset);
    if (end === undefined) throw new Error(`no pack entry at offset ${offset}`);
    const entry = Buffer.allocUnsafe(end - offset);
    await pack.handle.read(entry, 0, entry.length, offset);
    const header = parseEntryHeader(entry);
    const { type, size } = header;
    let base: { type: number; data: Buffer } | undefined;
    if (header.base && "distance" in header.base) {
      base = await this.readAt(pack, offset - header.base.distance);
    } else if (header.base) {
      const baseOffset = pack.offsets.get(header.base.oid);
      if (baseOffset === undefined) throw new MissingBaseError(header.base.oid);
      base = await this.readAt(pack, baseOffset);
    }
    if (size > objectLimit(base?.type ?? type, this.limit)) throw new ObjectTooLargeError(size);
    const inflated = zlib.inflateSync(entry.subarray(header.dataStart), { maxOutputLength: Math.max(size, 1) });
    if (inflated.length !== size) throw new Error(`pack entry at offset ${offset} inflates to ${inflated.length} bytes, not ${size}`);
    if (base) {
      const resultSize = deltaResultSize(inflated);
      if (resultSize > objectLimit(base.type, this.limit)) throw new ObjectTooLargeError(resultSize);
    }
    const object = base ? { type: base.type, data: applyDelta(inflated, base.data) } : { type, data: inflated };
    if (object.data.length < BASE_CACHE_BYTES / 8) this.keepBase(offset, object);
    return object;
  }

  /** Keeps an object as a possible delta base, dropping the oldest ones past the budget. */
  private keepBase(offset: number, object: { type: number; data: Buffer }): void {
    this.bases.set(offset, object);
    this.baseBytes += object.data.length;
    for (const [kept, value] of this.bases) {
      if (this.baseBytes <= BASE_CACHE_BYTES) break;
      this.bases.delete(kept);
      this.baseBytes -= value.data.length;
    }
  }
}
