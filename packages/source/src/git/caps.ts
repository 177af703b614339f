import { BuilderError, formatBytes } from "@m1l0/config";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import type { Context } from "./session.js";

/**
 * The filesystem isomorphic-git writes through, with the checkout counted: a small pack can
 * inflate into gigabytes (a file of zeros compresses ~1000:1), which CLONE_MAX_BYTES, counting
 * bytes on the wire, cannot see. Every working-tree write is counted before it reaches the disk;
 * the first one past a cap stops the clone (and every later write fails too).
 */
export function checkoutTooLarge(ctx: Context, what: string): BuilderError {
  return new BuilderError("SOURCE_TOO_LARGE", `repository ${ctx.shown} checks out to more than ${what}; use an s3 archive or a smaller repository`);
}

export function checkoutCappedFs(ctx: Context, caps: { maxBytes: number; maxFiles: number }, stop: (failure: BuilderError) => void): typeof fs {
  const gitDir = path.join(ctx.dir, ".git") + path.sep;
  let bytes = 0;
  let files = 0;
  const tooLarge = (what: string) => checkoutTooLarge(ctx, what);
  const fail = (failure: BuilderError): never => {
    stop(failure);
    throw ctx.failure ?? failure;
  };
  const addBytes = (size: number) => {
    bytes += size;
    if (bytes > caps.maxBytes) fail(tooLarge(`${formatBytes(caps.maxBytes)} (the worker's CLONE_MAX_CHECKOUT_BYTES)`));
  };
  const count = (file: unknown, size: number) => {
    if (`${path.resolve(String(file))}${path.sep}`.startsWith(gitDir)) return;
    files += 1;
    addBytes(size);
    if (files > caps.maxFiles) fail(tooLarge(`${caps.maxFiles} files (the worker's CLONE_MAX_CHECKOUT_FILES)`));
  };
  async function* counted(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of chunks) {
      addBytes(chunk.byteLength);
      yield chunk;
    }
  }
  const packDir = path.join(gitDir, "objects", "pack") + path.sep;
  const promises = {
    ...fs.promises,
    writeFile: async (
      file: Parameters<typeof fs.promises.writeFile>[0],
      data: string | NodeJS.ArrayBufferView | AsyncIterable<Uint8Array>,
      options?: Parameters<typeof fs.promises.writeFile>[2],
    ) => {
      if (typeof data !== "string" && !ArrayBuffer.isView(data)) {
        // chunks (a large blob inflated while written): each is counted before it is written
        count(file, 0);
        return fs.promises.writeFile(file, counted(data), options);
      }
      // A fetched pack is written before isomorphic-git indexes it (which inflates every object in
      // JavaScript): refuse an object that alone inflates past the cap before that work starts.
      const target = path.resolve(String(file));
      if (target.startsWith(packDir) && target.endsWith(".pack") && typeof data !== "string") {
        const largest = largestPackObject(Buffer.from(data.buffer, data.byteOffset, data.byteLength), caps.maxBytes);
        if (largest > caps.maxBytes) fail(tooLarge(`${formatBytes(caps.maxBytes)} (the worker's CLONE_MAX_CHECKOUT_BYTES): one file inflates to ${formatBytes(largest)}`));
      }
      count(file, typeof data === "string" ? Buffer.byteLength(data) : data.byteLength);
      return fs.promises.writeFile(file, data, options);
    },
    symlink: async (target: string, file: string, type?: string | null) => {
      count(file, 0);
      return fs.promises.symlink(target, file, type);
    },
  };
  return { ...fs, promises } as typeof fs;
}

/**
 * Size of the largest object a git pack inflates to, reading object headers (type and size) and
 * delta headers (result size); stops at the first object larger than `limit`, before inflating it.
 * Compressed data is skipped by inflating it natively (zlib), which is what finds where it ends.
 * Returns 0 for anything it does not understand: the write-time count still applies.
 */
export function largestPackObject(pack: Buffer, limit: number): number {
  if (pack.length < 12 || pack.toString("latin1", 0, 4) !== "PACK") return 0;
  const count = pack.readUInt32BE(8);
  let position = 12;
  let largest = 0;
  try {
    for (let index = 0; index < count && position < pack.length; index++) {
      let byte = pack[position++]!;
      const type = (byte >> 4) & 7;
      let size = byte & 15;
      let shift = 4;
      while (byte & 0x80) {
        byte = pack[position++]!;
        size += (byte & 0x7f) * 2 ** shift;
        shift += 7;
      }
      if (type === 6) {
        // ofs-delta: a variable-length negative offset to the base
        do byte = pack[position++]!;
        while (byte & 0x80);
      } else if (type === 7) {
        position += 20; // ref-delta: the base's object id
      }
      // blobs are what a checkout writes (commits, trees and tags are not files)
      if (type === 3 && size > limit) return size;
      if (type === 3) largest = Math.max(largest, size);
      // never inflate more than the header announced (a lying header fails here, and is refused by git anyway)
      const { buffer, engine } = zlib.inflateSync(pack.subarray(position), { info: true, maxOutputLength: Math.max(size, 1) }) as unknown as { buffer: Buffer; engine: { bytesWritten: number } };
      position += engine.bytesWritten;
      if (type === 6 || type === 7) {
        // delta data starts with the base size and the result size (little-endian base-128)
        let offset = 0;
        for (let part = 0; part < 2; part++) {
          let value = 0;
          let bits = 0;
          do {
            byte = buffer[offset++] ?? 0;
            value += (byte & 0x7f) * 2 ** bits;
            bits += 7;
          } while (byte & 0x80);
          if (part === 1) {
            if (value > limit) return value;
            largest = Math.max(largest, value);
          }
        }
      }
    }
  } catch {
    return largest;
  }
  return largest;
}

