import type fs from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { readBlob, readTree, type GitProgressEvent } from "isomorphic-git";
import type { PackReader } from "./pack.js";

/** Files written at once: enough to keep the disk and the inflating busy, few enough that memory stays flat. */
const CHECKOUT_CONCURRENCY = 8;

const EXECUTABLE = "100755";
const SYMLINK = "120000";

interface FileToWrite {
  file: string;
  oid: string;
  mode: string;
}

/** A tree entry as the checkout needs it (names already checked against git's verify_path rules). */
export interface TreeEntry {
  mode: string;
  path: string;
  oid: string;
  type: "tree" | "blob" | "commit";
}

/** Where the checkout reads objects from: our own fetch's pack, or what isomorphic-git fetched. */
export interface ObjectSource {
  /** the entries of a tree, or of a commit's tree */
  tree(oid: string): Promise<TreeEntry[]>;
  /** a blob's bytes, whole or (a large one) as chunks inflated while they are written */
  blob(oid: string): Promise<Uint8Array | AsyncIterable<Uint8Array>>;
}

/** Objects of a repository isomorphic-git fetched: trees through it, blobs straight from its packs. */
export function fetchedObjects(options: { gitFs: typeof fs; dir: string; cache: object; pack: PackReader }): ObjectSource {
  const { gitFs, dir, cache, pack } = options;
  return {
    tree: async (oid) => (await readTree({ fs: gitFs, dir, oid, cache })).tree,
    // objects outside the fetched packs (none in a clone, but cheap to allow) through isomorphic-git
    blob: async (oid) => (await pack.read(oid)) ?? (await readBlob({ fs: gitFs, dir, oid, cache })).blob,
  };
}

/** Objects of one pack we fetched and indexed ourselves. */
export function packObjects(pack: PackReader): ObjectSource {
  const read = async (oid: string, type: number, what: string) => {
    const object = await pack.readObject(oid);
    if (!object) throw new Error(`the fetched pack does not hold ${what} ${oid}`);
    if (object.type !== type) throw new Error(`object ${oid} is not a ${what}`);
    return object.data;
  };
  const blob = async (oid: string) => {
    const object = await pack.readStream(oid);
    if (!object) throw new Error(`the fetched pack does not hold blob ${oid}`);
    if (object.type !== 3) throw new Error(`object ${oid} is not a blob`);
    return object.chunks;
  };
  return {
    tree: async (oid) => {
      const object = await pack.readObject(oid);
      if (object?.type === 1) {
        const tree = /^tree ([0-9a-f]{40})\n/.exec(object.data.toString("latin1", 0, 46))?.[1];
        if (!tree) throw new Error(`commit ${oid} names no tree`);
        return parseTree(await read(tree, 2, "tree"));
      }
      if (object?.type !== 2) throw new Error(`the fetched pack does not hold tree ${oid}`);
      return parseTree(object.data);
    },
    blob,
  };
}

const ENTRY_TYPES: Readonly<Record<string, TreeEntry["type"]>> = { "40000": "tree", "100644": "blob", "100664": "blob", "100755": "blob", "120000": "blob", "160000": "commit" };

/**
 * Parses a tree object, refusing the names git's verify_path() refuses (as isomorphic-git's
 * parser does): separators, `.` and `..`, and `.git` in any spelling NTFS or HFS+ would
 * resolve to it.
 */
export function parseTree(data: Buffer): TreeEntry[] {
  const entries: TreeEntry[] = [];
  for (let cursor = 0; cursor < data.length; ) {
    const space = data.indexOf(32, cursor);
    const nul = data.indexOf(0, space + 1);
    if (space === -1 || nul === -1 || nul + 21 > data.length) throw new Error(`malformed tree entry at byte ${cursor}`);
    const rawMode = data.toString("latin1", cursor, space);
    const type = ENTRY_TYPES[rawMode];
    if (!type) throw new Error(`tree entry mode ${rawMode} is not one git writes`);
    const name = data.toString("utf8", space + 1, nul);
    if (unsafeName(name)) throw new Error(`the tree holds an unsafe file name: ${JSON.stringify(name)}`);
    entries.push({ mode: rawMode === "40000" ? "040000" : rawMode === "100664" ? "100644" : rawMode, path: name, oid: data.toString("hex", nul + 1, nul + 21), type });
    cursor = nul + 21;
  }
  return entries;
}

function unsafeName(name: string): boolean {
  const hfsClean = name.replace(/[\u200C-\u200F\u202A-\u202E\u206A-\u206F\uFEFF]/g, "");
  const normalized = (hfsClean.split(":")[0] ?? "").toLowerCase().replace(/[. ]+$/, "");
  return (
    name.length === 0 || name.includes("\\") || name.includes("/") || hfsClean === "." || hfsClean === ".." || normalized === ".git" || /^\.?git~[1-9]$/.test(normalized)
  );
}

/**
 * Writes a commit's tree into `dir` (which holds only `.git`), without git's index: the worker
 * reads the files and removes `.git`, so the index isomorphic-git's checkout builds (an lstat
 * and an entry per file) is work nobody uses, and its checkout starts every file at once
 * (all blobs inflated in memory together). Here a few files are in flight at a time and the
 * first failure (a cap of `gitFs`) stops the rest. Files are created exclusively (`wx`), so a
 * duplicate entry fails instead of writing through what an earlier one made.
 */
export async function checkoutCommit(options: {
  gitFs: typeof fs;
  dir: string;
  objects: ObjectSource;
  commit: string;
  onProgress: (event: GitProgressEvent) => void;
}): Promise<void> {
  const { gitFs, dir, objects } = options;
  const files: FileToWrite[] = [];
  const trees: Array<{ oid: string; at: string }> = [{ oid: options.commit, at: dir }];
  for (let tree = trees.pop(); tree; tree = trees.pop()) {
    for (const entry of await objects.tree(tree.oid)) {
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
  await writeFiles(files, { gitFs, read: (oid) => objects.blob(oid), onProgress: options.onProgress });
}

async function writeFiles(
  files: FileToWrite[],
  options: { gitFs: typeof fs; read: ObjectSource["blob"]; onProgress: (event: GitProgressEvent) => void },
): Promise<void> {
  const { gitFs } = options;
  let next = 0;
  let written = 0;
  let failure: { error: unknown } | undefined;
  const writer = async () => {
    while (!failure && next < files.length) {
      const { file, oid, mode } = files[next++]!;
      try {
        const blob = await options.read(oid);
        if (mode === SYMLINK) await gitFs.promises.symlink((await whole(blob)).toString("utf8"), file);
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

async function whole(blob: Uint8Array | AsyncIterable<Uint8Array>): Promise<Buffer> {
  if (blob instanceof Uint8Array) return Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  const chunks: Uint8Array[] = [];
  for await (const chunk of blob) chunks.push(chunk);
  return Buffer.concat(chunks);
}
