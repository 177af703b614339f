import { existsSync, readdirSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { extract } from "tar-stream";

export interface TarEntry {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  mtime: Date;
  linkname: string | null;
  content: Buffer;
}

const createdDirectories: string[] = [];

export async function makeTempDir(): Promise<string> {
  const directory = await mkdtemp(path.join(tmpdir(), "m1l0-context-test-"));
  createdDirectories.push(directory);
  return directory;
}

export async function removeTempDirs(): Promise<void> {
  await Promise.all(createdDirectories.splice(0).map((directory) => rm(directory, { recursive: true, force: true })));
}

/** Writes files (content string/Buffer) and empty directories (null) under root. */
export async function writeTree(root: string, tree: Record<string, string | Buffer | null>): Promise<void> {
  for (const [relPath, content] of Object.entries(tree)) {
    const absolutePath = path.join(root, relPath);
    if (content === null) {
      await mkdir(absolutePath, { recursive: true });
    } else {
      await mkdir(path.dirname(absolutePath), { recursive: true });
      await writeFile(absolutePath, content);
    }
  }
}

export async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Parses a tar with tar-stream, an implementation independent of the one under test. */
export async function readTar(archive: Buffer): Promise<TarEntry[]> {
  const entries: TarEntry[] = [];
  const extractor = extract();
  const done = (async () => {
    for await (const entry of extractor) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      const { header } = entry;
      entries.push({
        name: header.name,
        type: header.type,
        mode: header.mode,
        uid: header.uid,
        gid: header.gid,
        uname: header.uname,
        gname: header.gname,
        mtime: header.mtime,
        linkname: header.linkname ?? null,
        content: Buffer.concat(chunks),
      });
    }
  })();
  extractor.end(archive);
  await done;
  return entries;
}

export function namesOf(entries: readonly TarEntry[]): string[] {
  return entries.map((entry) => entry.name);
}

export function contentOf(entries: readonly TarEntry[], name: string): string | undefined {
  return entries.find((entry) => entry.name === name)?.content.toString("utf8");
}

/** Open file descriptors of this process, or null where /proc is missing. */
export function countOpenFiles(): number | null {
  return existsSync("/proc/self/fd") ? readdirSync("/proc/self/fd").length : null;
}

/** A fresh temp dir holding `count` files `blob-N.bin` of 1 MiB random bytes each. */
export async function blobTree(count: number): Promise<string> {
  const root = await makeTempDir();
  await writeTree(root, Object.fromEntries(Array.from({ length: count }, (_, index) => [`blob-${index}.bin`, randomBytes(1024 * 1024)])));
  return root;
}

/**
 * Runs `consume` and counts the turns of the event loop meanwhile (a setImmediate that schedules
 * itself runs once per turn). Counted in turns, not with a timer, so a fast run cannot read as a
 * starved loop: a producer kept on nextTick and microtasks lets no turn happen at all.
 */
export async function loopTurnsDuring(consume: () => Promise<void>): Promise<number> {
  let turns = 0;
  let stopped = false;
  const turn = () => {
    if (stopped) return;
    turns++;
    setImmediate(turn);
  };
  setImmediate(turn);
  try {
    await consume();
  } finally {
    stopped = true;
  }
  return turns;
}
