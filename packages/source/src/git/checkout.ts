import type fs from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { readBlob, readTree, type GitProgressEvent } from "isomorphic-git";
import { PackReader } from "./pack.js";

/** Files written at once: enough to keep the disk and the inflating busy, few enough that memory stays flat. */
const CHECKOUT_CONCURRENCY = 8;

const EXECUTABLE = "100755";
const SYMLINK = "120000";

interface FileToWrite {
  file: string;
  oid: string;
  mode: string;
}

/**
 * Writes a commit's tree into `dir` (which holds only `.git`), without git's index: the worker
 * reads the files and removes `.git`, so the index isomorphic-git's checkout builds (an lstat
 * and an entry per file) is work nobody uses, and its checkout starts every file at once
 * (all blobs inflated in memory together). Here a few files are in flight at a time and the
 * first failure (a cap of `gitFs`) stops the rest. Entry names were checked by isomorphic-git's
 * tree parser (no `..`, `/`, `.git`); files are created exclusively (`wx`), so a duplicate
 * entry fails instead of writing through what an earlier one made.
 */
export async function checkoutCommit(options: {
  gitFs: typeof fs;
  dir: string;
  cache: object;
  commit: string;
  onProgress: (event: GitProgressEvent) => void;
}): Promise<void> {
  const { gitFs, dir, cache } = options;
  const files: FileToWrite[] = [];
  const trees: Array<{ oid: string; at: string }> = [{ oid: options.commit, at: dir }];
  for (let tree = trees.pop(); tree; tree = trees.pop()) {
    const { tree: entries } = await readTree({ fs: gitFs, dir, oid: tree.oid, cache });
    for (const entry of entries) {
      const target = path.join(tree.at, entry.path);
      if (entry.type === "tree") {
        await mkdir(target);
        trees.push({ oid: entry.oid, at: target });
      } else if (entry.type === "commit") {
        // a submodule: git leaves an empty directory, its contents are not fetched
        await mkdir(target);
      } else {
        files.push({ file: target, oid: entry.oid, mode: entry.mode });
      }
    }
  }
  const pack = await PackReader.open(path.join(dir, ".git"));
  try {
    await writeFiles(files, { gitFs, pack, read: (oid) => readBlob({ fs: gitFs, dir, oid, cache }).then((result) => result.blob), onProgress: options.onProgress });
  } finally {
    await pack.close();
  }
}

async function writeFiles(
  files: FileToWrite[],
  options: { gitFs: typeof fs; pack: PackReader; read: (oid: string) => Promise<Uint8Array>; onProgress: (event: GitProgressEvent) => void },
): Promise<void> {
  const { gitFs, pack } = options;
  let next = 0;
  let written = 0;
  let failure: { error: unknown } | undefined;
  const writer = async () => {
    while (!failure && next < files.length) {
      const { file, oid, mode } = files[next++]!;
      try {
        // objects outside the fetched packs (none in a clone, but cheap to allow) through isomorphic-git
        const blob = (await pack.read(oid)) ?? (await options.read(oid));
        if (mode === SYMLINK) await gitFs.promises.symlink(Buffer.from(blob).toString("utf8"), file);
        else await gitFs.promises.writeFile(file, blob, { flag: "wx", mode: mode === EXECUTABLE ? 0o777 : 0o666 });
      } catch (error) {
        failure ??= { error };
        return;
      }
      options.onProgress({ phase: "Updating workdir", loaded: ++written, total: files.length });
    }
  };
  // every writer settles before this returns, so nothing lands in `dir` afterwards
  await Promise.all(Array.from({ length: CHECKOUT_CONCURRENCY }, writer));
  if (failure) throw failure.error;
}
