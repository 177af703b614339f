import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PackReader } from "../src/git/pack.js";
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
