import { execFileSync } from "node:child_process";
import { mkdtemp, open, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CorruptPackError, indexPack } from "../src/git/pack-index.js";
import { ObjectTooLargeError, PackReader } from "../src/git/pack.js";
import { git } from "./helpers.js";

/** Checked against git itself: every blob of a repacked repository, deltas (ofs and chains) included. */
describe("PackReader", () => {
  let work: string;
  let blobs: string[];

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "m1l0-pack-test-"));
    git(work, "init", "-q", "-b", "main");
    const base = Array.from({ length: 2000 }, (_, line) => `line ${line} of a file that deltifies well`).join("\n");
    // a few commits of slowly changing files: git stores most versions as deltas of each other
    for (let version = 0; version < 6; version++) {
      for (let file = 0; file < 4; file++) await writeFile(path.join(work, `file_${file}.txt`), `${base}\nversion ${version} of file ${file}\n${"x".repeat(version * 100)}`);
      await writeFile(path.join(work, "empty.txt"), "");
      git(work, "add", "-A");
      git(work, "commit", "-q", "-m", `version ${version}`);
    }
    git(work, "repack", "-adfq", "--depth=10");
    blobs = git(work, "rev-list", "--objects", "--all")
      .split("\n")
      .map((line) => line.split(" ")[0]!)
      .filter((oid) => git(work, "cat-file", "-t", oid) === "blob");
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it("reads every blob as git does, and nothing it does not hold", async () => {
    const packDir = path.join(work, ".git", "objects", "pack");
    const index = (await readdir(packDir)).find((name) => name.endsWith(".idx"))!;
    // the fixture is worth its name only if it holds delta chains
    const verbose = git(work, "verify-pack", "-v", path.join(packDir, index));
    expect(verbose).toMatch(/chain length = [2-9]/);
    const reader = await PackReader.open(path.join(work, ".git"));
    try {
      for (const oid of blobs) {
        const expected = execFileSync("git", ["cat-file", "blob", oid], { cwd: work });
        expect((await reader.read(oid))?.equals(expected), oid).toBe(true);
      }
      expect(await reader.read("0".repeat(40))).toBeUndefined();
    } finally {
      await reader.close();
    }
  });
});

/** Our indexer (the pack our own fetch receives) against git's index of the same pack, ofs- and ref-deltas alike. */
describe("indexPack", () => {
  let work: string;
  let objects: Array<{ oid: string; type: string }>;
  const signal = new AbortController().signal;
  const noProgress = () => undefined;

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "m1l0-index-test-"));
    git(work, "init", "-q", "-b", "main");
    const base = Array.from({ length: 1500 }, (_, line) => `row ${line}, a line that deltifies well`).join("\n");
    for (let version = 0; version < 5; version++) {
      for (let file = 0; file < 3; file++) await writeFile(path.join(work, `file_${file}.txt`), `${base}\nversion ${version} of ${file}\n`);
      git(work, "add", "-A");
      git(work, "commit", "-q", "-m", `version ${version}`);
    }
    git(work, "tag", "-a", "v1", "-m", "an annotated tag");
    objects = git(work, "cat-file", "--batch-all-objects", "--batch-check=%(objectname) %(objecttype)")
      .split("\n")
      .map((line) => {
        const [oid, type] = line.split(" ");
        return { oid: oid!, type: type! };
      });
  });

  afterAll(async () => {
    await rm(work, { recursive: true, force: true });
  });

  /** A pack of every object, by `git pack-objects` (`--delta-base-offset` for ofs-deltas, else ref-deltas). */
  async function packOf(name: string, ...flags: string[]): Promise<string> {
    const file = path.join(work, `${name}.pack`);
    const pack = execFileSync("git", ["pack-objects", "--stdout", "--depth=10", ...flags], { cwd: work, input: objects.map((object) => object.oid).join("\n") + "\n" });
    await writeFile(file, pack);
    return file;
  }

  it.each([
    ["ofs-deltas", ["--delta-base-offset"]],
    ["ref-deltas", []],
  ])("indexes a pack with %s: every object reads back as git has it", async (_label, flags) => {
    const file = await packOf(_label, ...flags);
    const gitIndex = file.replace(/\.pack$/, ".idx");
    execFileSync("git", ["index-pack", "-o", gitIndex, file], { cwd: work });
    const deltas = execFileSync("git", ["verify-pack", "-v", gitIndex], { cwd: work, encoding: "utf8" });
    expect(deltas, "the fixture must hold deltas").toMatch(/chain length = [1-9]/);
    const handle = await open(file, "r");
    try {
      const phases = new Map<string, number>();
      const { reader, objects: count } = await indexPack(handle, { limit: Number.POSITIVE_INFINITY, signal, onProgress: ({ phase, loaded }) => phases.set(phase, loaded) });
      expect(count).toBe(objects.length);
      expect(phases.get("Indexing objects")).toBe(objects.length);
      expect(phases.get("Resolving deltas")).toBeGreaterThan(0);
      for (const { oid, type } of objects) {
        const expected = execFileSync("git", ["cat-file", type, oid], { cwd: work });
        const object = await reader.readObject(oid);
        expect(object?.data.equals(expected), `${type} ${oid}`).toBe(true);
      }
      expect(await reader.readObject("0".repeat(40))).toBeUndefined();
    } finally {
      await handle.close();
    }
  });

  it("refuses a blob larger than the limit before inflating it, and a truncated pack", async () => {
    const file = await packOf("limits", "--delta-base-offset");
    const handle = await open(file, "r");
    try {
      await expect(indexPack(handle, { limit: 1000, signal, onProgress: noProgress })).rejects.toBeInstanceOf(ObjectTooLargeError);
    } finally {
      await handle.close();
    }
    const truncated = path.join(work, "truncated.pack");
    const whole = await readFile(file);
    await writeFile(truncated, whole.subarray(0, Math.floor(whole.length / 2)));
    const cut = await open(truncated, "r");
    try {
      await expect(indexPack(cut, { limit: Number.POSITIVE_INFINITY, signal, onProgress: noProgress })).rejects.toBeInstanceOf(CorruptPackError);
    } finally {
      await cut.close();
    }
  });
});
