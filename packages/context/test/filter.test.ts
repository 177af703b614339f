import { BuilderError } from "@m1l0/config";
import { symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createContextFilter, packContext } from "../src/index.js";
import { collect, contentOf, makeTempDir, namesOf, readTar, removeTempDirs, writeTree } from "./helpers.js";

// The original service's default ignore list, verbatim.
const ORIGINAL_IGNORES = ["*.md", "*.npy", ".pytest_cache", ".gitignore", ".git", "__pycache__", "*.pyc", "tmp*", "checkpoints*", "models*", "backups", "checkpoints", "*.tar.gz", "data"];

afterEach(removeTempDirs);

async function packedNames(root: string, ignores: readonly string[]): Promise<string[]> {
  const filter = await createContextFilter(root, ignores);
  return namesOf(await readTar(await collect(packContext(root, { filter }))));
}

describe("createContextFilter with the original ignore list", () => {
  it("applies Docker semantics: unanchored patterns match at the root only, not nested like .gitignore", async () => {
    const root = await makeTempDir();
    await writeTree(root, {
      "README.md": "readme",
      "main.py": "print('hi')",
      "requirements.txt": "numpy",
      "weights.npy": "npy",
      ".gitignore": "*.pyc",
      ".git/HEAD": "ref: refs/heads/main",
      ".pytest_cache/v/cache/lastfailed": "{}",
      "__pycache__/main.cpython-39.pyc": "pyc",
      "helper.pyc": "pyc",
      "tmp_output.txt": "tmp",
      "tmpdir/scratch.txt": "tmp",
      "checkpoints/epoch1.ckpt": "ckpt",
      "checkpoints_best/epoch9.ckpt": "ckpt",
      "models/net.h5": "h5",
      "models.bak": "bak",
      "backups/old.zip": "zip",
      "archive.tar.gz": "tgz",
      "data/train.csv": "a,b",
      // Same names one level down: Docker keeps them all (gitignore semantics would drop them).
      "docs/guide.md": "guide",
      "src/__pycache__/util.cpython-39.pyc": "pyc",
      "src/data/loader.py": "loader",
      "src/models/net.py": "net",
      "src/tmp_helpers.py": "helpers",
      "src/features.npy": "npy",
      "src/bundle.tar.gz": "tgz",
      "src/util.py": "util",
    });

    expect(await packedNames(root, ORIGINAL_IGNORES)).toEqual([
      "docs/",
      "docs/guide.md",
      "main.py",
      "requirements.txt",
      "src/",
      "src/__pycache__/",
      "src/__pycache__/util.cpython-39.pyc",
      "src/bundle.tar.gz",
      "src/data/",
      "src/data/loader.py",
      "src/features.npy",
      "src/models/",
      "src/models/net.py",
      "src/tmp_helpers.py",
      "src/util.py",
    ]);
  });

  it("matches nested files only with **", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "README.md": "r", "docs/guide.md": "g", "docs/deep/notes.md": "n", "main.py": "m" });
    expect(await packedNames(root, ["**/*.md"])).toEqual(["docs/", "docs/deep/", "main.py"]);
    expect(await packedNames(root, ["*.md"])).toEqual(["docs/", "docs/deep/", "docs/deep/notes.md", "docs/guide.md", "main.py"]);
  });

  it("matches case-sensitively, like Docker", async () => {
    const root = await makeTempDir();
    const filter = await createContextFilter(root, ["*.MD", "Data"]);
    expect(filter.isIgnored("README.md")).toBe(false);
    expect(filter.isIgnored("data/x.csv")).toBe(false);
    expect(filter.isIgnored("README.MD")).toBe(true);
    expect(filter.isIgnored("Data/x.csv")).toBe(true);
  });
});

describe(".dockerignore", () => {
  it("combines the source's .dockerignore with request ignores, request patterns last so they win", async () => {
    const root = await makeTempDir();
    await writeTree(root, {
      ".dockerignore": "\uFEFFsecrets\n# a comment\n\n*.log\n!keep.log\n!debug.log\r\n",
      "secrets/token": "t",
      "app.log": "a",
      "keep.log": "k",
      "debug.log": "d",
      "error.log": "e",
      "main.py": "m",
    });
    const filter = await createContextFilter(root, ["keep.log", "debug.log", "!error.log"]);

    expect(filter.patterns).toEqual(["secrets", "*.log", "!keep.log", "!debug.log", "keep.log", "debug.log", "!error.log"]);
    // .dockerignore itself is sent unless ignored, as Docker does.
    expect(namesOf(await readTar(await collect(packContext(root, { filter }))))).toEqual([".dockerignore", "error.log", "main.py"]);
  });

  it("excludes .dockerignore and Dockerfile only when a pattern says so", async () => {
    const root = await makeTempDir();
    await writeTree(root, { ".dockerignore": "Dockerfile\n", Dockerfile: "FROM x", "main.py": "m" });
    expect(await packedNames(root, [])).toEqual([".dockerignore", "main.py"]);
    expect(await packedNames(root, [".dockerignore"])).toEqual(["main.py"]);
  });

  it("refuses a symlinked .dockerignore instead of reading through it", async () => {
    const root = await makeTempDir();
    const outside = await makeTempDir();
    await writeFile(path.join(outside, "patterns"), "*\n");
    await symlink(path.join(outside, "patterns"), path.join(root, ".dockerignore"));
    await expect(createContextFilter(root, [])).rejects.toMatchObject({ name: "BuilderError", code: "ARCHIVE_INVALID" });
    await expect(createContextFilter(root, [])).rejects.toBeInstanceOf(BuilderError);
  });
});

describe("exception patterns", () => {
  it("re-includes files inside an ignored directory and writes only the directories they need", async () => {
    const root = await makeTempDir();
    await writeTree(root, {
      "models/keep.pt": "keep",
      "models/other.pt": "other",
      "models/empty": null,
      "data/skip.bin": "skip",
      "data/keep/a.txt": "a",
      "data/keep/b.bin": "b",
      "data/empty": null,
      "main.py": "m",
    });
    const filter = await createContextFilter(root, ["models", "!models/keep.pt", "data", "!data/keep/*.txt"]);
    const entries = await readTar(await collect(packContext(root, { filter })));

    expect(namesOf(entries)).toEqual(["data/", "data/keep/", "data/keep/a.txt", "main.py", "models/", "models/keep.pt"]);
    expect(contentOf(entries, "models/keep.pt")).toBe("keep");
  });

  it("honours wildcard exceptions below an ignored directory", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "data/a.py": "a", "data/b.csv": "b", "data/deep/c.py": "c" });
    expect(await packedNames(root, ["data", "!**/*.py"])).toEqual(["data/", "data/a.py", "data/deep/", "data/deep/c.py"]);
  });

  it("lets the walker skip ignored directories no exception can reach", async () => {
    const root = await makeTempDir();
    const filter = await createContextFilter(root, ["data", "models*", "!models/keep.pt", "cache", "!cache/*/keep"]);

    expect(filter.canSkipDirectory?.("data")).toBe(true);
    expect(filter.canSkipDirectory?.("models_old")).toBe(true);
    expect(filter.canSkipDirectory?.("models")).toBe(false);
    expect(filter.canSkipDirectory?.("cache")).toBe(false);
    expect(filter.canSkipDirectory?.("cache/v1")).toBe(false);
    // Not ignored at all: there is nothing to skip.
    expect(filter.canSkipDirectory?.("src")).toBe(false);

    const withoutExceptions = await createContextFilter(root, ["data"]);
    expect(withoutExceptions.canSkipDirectory?.("data")).toBe(true);
    const withDoubleStar = await createContextFilter(root, ["data", "!**/*.py"]);
    expect(withDoubleStar.canSkipDirectory?.("data")).toBe(false);
  });
});
