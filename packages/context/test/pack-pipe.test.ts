import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { createContextFilter, packContext, type ContextTap } from "../src/index.js";
import { blobTree, collect, countOpenFiles, makeTempDir, namesOf, readTar, removeTempDirs, loopTurnsDuring, writeTree } from "./helpers.js";

afterEach(removeTempDirs);

/** A tree with large files (several chunks each) and many small ones (many entries per chunk). */
async function mixedTree(): Promise<string> {
  const root = await makeTempDir();
  const small = Object.fromEntries(Array.from({ length: 300 }, (_, index) => [`src/pkg_${index % 7}/module_${index}.py`, randomBytes(100 + ((index * 997) % 9000))]));
  const large = Object.fromEntries(Array.from({ length: 6 }, (_, index) => [`assets/shard_${index}.bin`, randomBytes(700_000 + index * 1234)]));
  await writeTree(root, { ...small, ...large, "main.py": "print('hi')\n", "cache/skip.tmp": "x" });
  return root;
}

/**
 * Records what it was given at write time and, when it calls back (after `delayMs`, out of
 * order when delays differ), checks the buffer still holds those bytes: a packer that reused a
 * buffer before the callback would be caught.
 */
class CheckingWritable extends Writable {
  readonly received: Buffer[] = [];
  readonly buffers = new Set<ArrayBufferLike>();
  overwritten = 0;
  #writes = 0;

  constructor(private readonly delayMs: (index: number) => number) {
    super({ highWaterMark: 16 * 1024 });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const copy = Buffer.from(chunk);
    this.received.push(copy);
    this.buffers.add(chunk.buffer);
    setTimeout(() => {
      if (!chunk.equals(copy)) this.overwritten++;
      callback();
    }, this.delayMs(this.#writes++));
  }
}

describe("packContext piped (reused buffers)", () => {
  it("writes the same archive as a reader gets, reusing a small pool of buffers and never one still being written", async () => {
    const root = await mixedTree();
    const filter = await createContextFilter(root, ["**/*.tmp"]);
    const read = await collect(packContext(root, { filter }));

    const destination = new CheckingWritable((index) => index % 3);
    packContext(root, { filter }).pipe(destination);
    await once(destination, "finish");

    expect(Buffer.concat(destination.received).equals(read)).toBe(true);
    expect(destination.overwritten).toBe(0);
    expect(destination.received.length).toBeGreaterThan(30);
    // 8 buffers of the pool, however many chunks (a reader gets a fresh buffer per chunk)
    expect(destination.buffers.size).toBeLessThanOrEqual(8);
    expect(namesOf(await readTar(read))).toContain("assets/shard_5.bin");
    expect(namesOf(await readTar(read))).not.toContain("cache/skip.tmp");
  });

  it("lets the tap see every chunk first and holds a buffer until the tap is done with it", async () => {
    const root = await mixedTree();
    const filter = await createContextFilter(root, []);
    const tapped: Buffer[] = [];
    let ends = 0;
    let tapOverwritten = 0;
    const tap: ContextTap = {
      write(chunk) {
        const copy = Buffer.from(chunk);
        tapped.push(copy);
        // slower than the destination: the buffer must wait for both
        return new Promise((resolve) =>
          setTimeout(() => {
            if (!chunk.equals(copy)) tapOverwritten++;
            resolve();
          }, 3),
        );
      },
      end: () => void ends++,
    };
    const destination = new CheckingWritable(() => 0);
    const packed = packContext(root, { filter, tap });
    packed.pipe(destination);
    await Promise.all([once(destination, "finish"), once(packed, "close")]);

    expect(Buffer.concat(tapped).equals(Buffer.concat(destination.received))).toBe(true);
    expect(tapOverwritten + destination.overwritten).toBe(0);
    expect(ends).toBe(1);
  });

  it("gives a reader the same bytes through an async tap, ending the tap once", async () => {
    const root = await mixedTree();
    const filter = await createContextFilter(root, []);
    const tapped: Buffer[] = [];
    let ends = 0;
    const tap: ContextTap = { write: (chunk) => (tapped.push(Buffer.from(chunk)), new Promise((resolve) => setImmediate(resolve))), end: () => void ends++ };
    const read = await collect(packContext(root, { filter, tap }));
    expect(Buffer.concat(tapped).equals(read)).toBe(true);
    expect(ends).toBe(1);
  });

  it("stops quietly and closes its files when the destination is destroyed mid-way", async () => {
    const root = await blobTree(12);
    const filter = await createContextFilter(root, []);
    const openFilesBefore = countOpenFiles();
    let ended = false;
    let tapped = 0;
    const destination = new CheckingWritable(() => 1);
    // destroyed at the 20th chunk (2.5 MiB of 12), whatever the machine's speed
    const tap = { write: () => void (++tapped === 20 && destination.destroy()), end: () => void (ended = true) };
    const packed = packContext(root, { filter, tap });
    const errors: unknown[] = [];
    packed.on("error", (error) => errors.push(error));
    packed.pipe(destination);
    await once(packed, "close");

    expect(errors).toEqual([]); // the destination's owner reports why, not the packer
    expect(ended).toBe(false);
    expect(Buffer.concat(destination.received).length).toBeLessThan(4 * 1024 * 1024); // the pool's worth after the 20th at most
    await new Promise((resolve) => setTimeout(resolve, 20));
    if (openFilesBefore !== null) expect(countOpenFiles()).toBe(openFilesBefore);
  });

  it("fails with ARCHIVE_INVALID past maxBytes and does not end the destination", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "a.bin": randomBytes(600_000), "b.bin": randomBytes(600_000) });
    const filter = await createContextFilter(root, []);
    const destination = new CheckingWritable(() => 0);
    const packed = packContext(root, { filter, maxBytes: 1_000_000 });
    packed.pipe(destination);
    const [error] = (await once(packed, "error")) as [{ code: string; message: string }];
    expect(error.code).toBe("ARCHIVE_INVALID");
    expect(error.message).toMatch(/larger than/);
    expect(destination.writableEnded).toBe(false);
  });

  it("lets the event loop turn while a destination that calls back at once takes a large context", async () => {
    const root = await blobTree(24);
    const filter = await createContextFilter(root, []);
    let bytes = 0;
    const counter = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        callback();
      },
    });
    const turns = await loopTurnsDuring(async () => {
      packContext(root, { filter }).pipe(counter);
      await once(counter, "finish");
    });
    expect(bytes).toBeGreaterThan(24 * 1024 * 1024);
    expect(turns).toBeGreaterThanOrEqual(3);
  });

  it("refuses a second pipe, and a pipe after reading", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "main.py": "print(1)\n" });
    const filter = await createContextFilter(root, []);
    const piped = packContext(root, { filter });
    piped.pipe(new CheckingWritable(() => 0));
    expect(() => piped.pipe(new CheckingWritable(() => 0))).toThrow(/piped once/);
    const read = packContext(root, { filter });
    read.read();
    expect(() => read.pipe(new CheckingWritable(() => 0))).toThrow(/piped once/);
    read.destroy();
  });
});
