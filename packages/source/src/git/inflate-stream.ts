import type { Hash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";

/**
 * Objects at least this large are inflated in slices (weights files of tens of MiB): holding
 * one whole, compressed and inflated, would cost twice its size at once, and more again while
 * the garbage collector catches up with the buffers of the previous ones.
 */
export const STREAM_OBJECT_BYTES = 1024 * 1024;
const SLICE_BYTES = 1024 * 1024;

async function* slicesOf(handle: FileHandle, start: number, end: number): AsyncGenerator<Buffer> {
  for (let position = start; position < end; ) {
    const slice = Buffer.allocUnsafe(Math.min(SLICE_BYTES, end - position));
    const { bytesRead } = await handle.read(slice, 0, slice.length, position);
    if (bytesRead === 0) throw new Error(`the pack file ends at ${position}, before ${end}`);
    position += bytesRead;
    yield slice.subarray(0, bytesRead);
  }
}

/**
 * The inflated bytes of the zlib stream stored at [start, end) of a pack, chunk by chunk with
 * backpressure (the consumer writes them to a file). Fails unless they come to exactly `size`.
 */
export async function* inflateRange(handle: FileHandle, start: number, end: number, size: number): AsyncGenerator<Buffer> {
  const inflate = zlib.createInflate();
  const feeding = pipeline(Readable.from(slicesOf(handle, start, end)), inflate);
  let produced = 0;
  try {
    for await (const chunk of inflate as AsyncIterable<Buffer>) {
      produced += chunk.length;
      if (produced > size) throw new Error(`a pack entry at offset ${start} inflates to more than its ${size} bytes`);
      yield chunk;
    }
    await feeding;
  } finally {
    inflate.destroy();
    await feeding.catch(() => undefined);
  }
  if (produced !== size) throw new Error(`a pack entry at offset ${start} inflates to ${produced} bytes, not ${size}`);
}

/**
 * Hashes the inflated bytes of the zlib stream starting at `start` without holding them, and
 * returns how many compressed bytes it took: where the next pack entry begins (zlib stops at its
 * stream's end and ignores what follows). Fails unless they come to exactly `size`.
 */
export async function hashInflated(handle: FileHandle, start: number, fileEnd: number, size: number, hash: Hash): Promise<number> {
  const inflate = zlib.createInflate();
  let produced = 0;
  let ended = false;
  inflate.on("data", (chunk: Buffer) => {
    produced += chunk.length;
    if (produced > size) inflate.destroy(new Error(`a pack entry at offset ${start} inflates to more than its ${size} bytes`));
    else hash.update(chunk);
  });
  const finished = new Promise<void>((resolve, reject) => {
    inflate.once("end", () => {
      ended = true;
      resolve();
    });
    inflate.once("error", reject);
  });
  finished.catch(() => undefined);
  try {
    for await (const slice of slicesOf(handle, start, fileEnd)) {
      if (ended) break;
      // `finished` first: when inflating fails, its reason (not the write's "destroyed") is the error
      await Promise.race([finished, new Promise<void>((resolve, reject) => inflate.write(slice, (error) => (error && !ended ? reject(error) : resolve())))]);
    }
    if (!ended) inflate.end();
    await finished;
  } finally {
    inflate.destroy();
  }
  if (produced !== size) throw new Error(`a pack entry at offset ${start} inflates to ${produced} bytes, not ${size}`);
  return inflate.bytesWritten;
}
