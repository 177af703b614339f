import { mkdtemp, rm, writeFile, open, mkdir, stat, readdir } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { largestPackObject } from "../src/git.js";
import { fetchSource, type SourcePolicy } from "../src/index.js";
import { readFile } from "node:fs/promises";
import { GIT_FIXTURES_DIR, GIT_SERVER_URL, git, listTree, rejection, scratch, uniqueName } from "./helpers.js";

/**
 * A repository whose pack is small but whose checkout is huge: CLONE_MAX_BYTES (bytes on the
 * wire) lets it through; the checkout caps stop it while it is written, leaving nothing behind.
 */
const policy: SourcePolicy = { allowHttp: true, allowDir: false, hostAllowlist: ["127.0.0.1/32"] };
const ZEROS_MIB = 300;
const zerosRepo = { group: uniqueName("test-zeros"), url: "", packBytes: 0 };
const manyFilesRepo = { group: uniqueName("test-many-files"), url: "" };
/** Files each under the cap but together over it, large enough to be inflated while written (in slices). */
const weightsRepo = { group: uniqueName("test-weights"), url: "" };
const WEIGHT_FILES = 3;
const WEIGHT_BYTES = 3 * 1024 * 1024;

async function serve(group: string, fill: (work: string) => Promise<void>): Promise<{ url: string; packBytes: number }> {
  const bare = path.join(GIT_FIXTURES_DIR, group, "repo.git");
  const work = await mkdtemp(path.join(os.tmpdir(), "m1l0-expansion-fixture-"));
  try {
    git(work, "init", "-q", "-b", "main");
    await fill(work);
    git(work, "add", "-A");
    git(work, "commit", "-q", "-m", "fixture");
    await mkdir(path.dirname(bare), { recursive: true });
    git(work, "clone", "-q", "--bare", work, bare);
    git(bare, "symbolic-ref", "HEAD", "refs/heads/main");
    git(bare, "repack", "-adq");
    const packDir = path.join(bare, "objects", "pack");
    let packBytes = 0;
    for (const name of await readdir(packDir)) if (name.endsWith(".pack")) packBytes += (await stat(path.join(packDir, name))).size;
    return { url: `${GIT_SERVER_URL}/${group}/repo.git`, packBytes };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

beforeAll(async () => {
  const zeros = await serve(zerosRepo.group, async (work) => {
    await writeFile(path.join(work, "main.py"), "print('hi')\n");
    // 300 MiB of zeros, written sparsely (git still reads zeros)
    const handle = await open(path.join(work, "zeros.bin"), "w");
    await handle.truncate(ZEROS_MIB * 1024 * 1024);
    await handle.close();
  });
  zerosRepo.url = zeros.url;
  zerosRepo.packBytes = zeros.packBytes;
  manyFilesRepo.url = (
    await serve(manyFilesRepo.group, async (work) => {
      await mkdir(path.join(work, "many"));
      for (let index = 0; index < 3000; index++) await writeFile(path.join(work, "many", `f${index}.txt`), `${index % 7}\n`);
    })
  ).url;
  weightsRepo.url = (
    await serve(weightsRepo.group, async (work) => {
      for (let index = 0; index < WEIGHT_FILES; index++) await writeFile(path.join(work, `w${index}.bin`), randomBytes(WEIGHT_BYTES));
    })
  ).url;
}, 180_000);

afterAll(async () => {
  await rm(path.join(GIT_FIXTURES_DIR, zerosRepo.group), { recursive: true, force: true });
  await rm(path.join(GIT_FIXTURES_DIR, manyFilesRepo.group), { recursive: true, force: true });
  await rm(path.join(GIT_FIXTURES_DIR, weightsRepo.group), { recursive: true, force: true });
});

async function attempt(source: string, extra: Partial<SourcePolicy>) {
  const area = await scratch();
  try {
    const error = await rejection(fetchSource({ source, workDir: area.workDir, policy: { ...policy, ...extra } }));
    return { error, leftovers: await listTree(area.base) };
  } finally {
    await area.cleanup();
  }
}

describe("git sources: expansion caps", () => {
  it("the fixture is a small pack that inflates ~1000×", () => {
    expect(zerosRepo.packBytes).toBeLessThan(2 * 1024 * 1024);
  });

  it("stops a checkout larger than CLONE_MAX_CHECKOUT_BYTES although its pack is under CLONE_MAX_BYTES", async () => {
    const { error, leftovers } = await attempt(zerosRepo.url, { cloneMaxBytes: 16 * 1024 * 1024, cloneMaxCheckoutBytes: 64 * 1024 * 1024 });
    expect(error.code).toBe("SOURCE_TOO_LARGE");
    expect(error.message).toMatch(/^repository http:\/\/127\.0\.0\.1:\d+\/test-zeros-[^ ]+ checks out to more than 64\.0 MiB \(the worker's CLONE_MAX_CHECKOUT_BYTES\)/);
    expect(error.retryable).toBe(false);
    // nothing of the checkout is left on disk, not even .git
    expect(leftovers).toEqual(["a", "a/b", "a/b/work"]);
  });

  it("stops a checkout with more files than CLONE_MAX_CHECKOUT_FILES", async () => {
    const { error, leftovers } = await attempt(manyFilesRepo.url, { cloneMaxCheckoutFiles: 1000 });
    expect(error.code).toBe("SOURCE_TOO_LARGE");
    expect(error.message).toContain("checks out to more than 1000 files (the worker's CLONE_MAX_CHECKOUT_FILES)");
    expect(leftovers).toEqual(["a", "a/b", "a/b/work"]);
  });

  it("counts large files while they are inflated to disk, and stops at the total", async () => {
    const { error, leftovers } = await attempt(weightsRepo.url, { cloneMaxCheckoutBytes: 2 * WEIGHT_BYTES + 1024 });
    expect(error.code).toBe("SOURCE_TOO_LARGE");
    expect(error.message).toContain("checks out to more than 6.0 MiB (the worker's CLONE_MAX_CHECKOUT_BYTES)");
    expect(leftovers).toEqual(["a", "a/b", "a/b/work"]);
  });

  it("writes large files inflated in slices byte for byte", async () => {
    const area = await scratch();
    try {
      const fetched = await fetchSource({ source: weightsRepo.url, workDir: area.workDir, policy: { ...policy, cloneMaxCheckoutBytes: WEIGHT_FILES * WEIGHT_BYTES } });
      for (let index = 0; index < WEIGHT_FILES; index++) {
        const file = path.join(fetched.root, `w${index}.bin`);
        expect(git(fetched.root, "hash-object", file)).toBe(git(path.join(GIT_FIXTURES_DIR, weightsRepo.group, "repo.git"), "rev-parse", `HEAD:w${index}.bin`));
      }
    } finally {
      await area.cleanup();
    }
  });

  it("lets the same repositories through under caps they fit", async () => {
    const area = await scratch();
    try {
      const fetched = await fetchSource({ source: manyFilesRepo.url, workDir: area.workDir, policy: { ...policy, cloneMaxCheckoutFiles: 3001, cloneMaxCheckoutBytes: 64 * 1024 } });
      expect((await readdir(path.join(fetched.root, "many"))).length).toBe(3000);
    } finally {
      await area.cleanup();
    }
  });
});

describe("largestPackObject", () => {
  it("reads blob sizes and delta result sizes from a real pack without trusting file sizes on disk", async () => {
    const work = await mkdtemp(path.join(os.tmpdir(), "m1l0-pack-scan-"));
    try {
      git(work, "init", "-q", "-b", "main");
      const lines = Array.from({ length: 20_000 }, (_, index) => `line ${index} ${(index * 7919) % 10007}`).join("\n");
      await writeFile(path.join(work, "big.txt"), lines);
      git(work, "add", "-A");
      git(work, "commit", "-q", "-m", "one");
      await writeFile(path.join(work, "big.txt"), `${lines}\nand one more line`);
      git(work, "commit", "-qam", "two");
      git(work, "repack", "-adfq");
      const packDir = path.join(work, ".git", "objects", "pack");
      const name = (await readdir(packDir)).find((entry) => entry.endsWith(".pack"))!;
      const pack = await readFile(path.join(packDir, name));
      // one of the two versions is stored as a delta against the other
      expect(git(work, "verify-pack", "-v", path.join(packDir, name.replace(/pack$/, "idx")))).toMatch(/chain length = 1/);
      const size = Buffer.byteLength(lines) + "\nand one more line".length;
      expect(largestPackObject(pack, 10 * size)).toBe(size);
      // past a limit it stops at the first object that exceeds it and reports that object's size
      expect(largestPackObject(pack, 1000)).toBeGreaterThan(1000);
      expect(largestPackObject(Buffer.from("not a pack"), 10)).toBe(0);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});
