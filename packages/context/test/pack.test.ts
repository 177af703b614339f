import { BuilderError } from "@m1l0/config";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, mkdir, symlink, utimes, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import path from "node:path";
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { contextHasFile, createContextFilter, packContext, type ContextFilter } from "../src/index.js";
import { blobTree, collect, contentOf, countOpenFiles, makeTempDir, namesOf, readTar, removeTempDirs, loopTurnsDuring, writeTree } from "./helpers.js";

afterEach(removeTempDirs);

const FIXED_MTIME = new Date("2000-01-01T00:00:00Z");

async function pack(root: string, options: { ignores?: string[]; extraFiles?: Parameters<typeof packContext>[1]["extraFiles"]; maxFiles?: number; maxBytes?: number } = {}) {
  const filter = await createContextFilter(root, options.ignores ?? []);
  const { ignores: _ignores, ...packOptions } = options;
  return collect(packContext(root, { filter, ...packOptions }));
}

describe("packContext", () => {
  it("writes sorted entries with normalized owner, time and modes, keeping the executable bit", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "b.txt": "bee", "a/run.sh": "#!/bin/sh\necho hi\n", "a/lib.py": "x = 1\n", "a.txt": "ay", "empty": null });
    await chmod(path.join(root, "a/run.sh"), 0o700);
    await chmod(path.join(root, "b.txt"), 0o600);

    const entries = await readTar(await pack(root));

    // Each directory's entries in code-unit order, depth first.
    expect(namesOf(entries)).toEqual(["a/", "a/lib.py", "a/run.sh", "a.txt", "b.txt", "empty/"]);
    for (const entry of entries) {
      expect(entry).toMatchObject({ uid: 0, gid: 0, uname: "", gname: "" });
      expect(entry.mtime.toISOString()).toBe(FIXED_MTIME.toISOString());
    }
    const modes = Object.fromEntries(entries.map((entry) => [entry.name, [entry.type, entry.mode]]));
    expect(modes).toEqual({
      "a/": ["directory", 0o755],
      "a/lib.py": ["file", 0o644],
      "a/run.sh": ["file", 0o755],
      "a.txt": ["file", 0o644],
      "b.txt": ["file", 0o644],
      "empty/": ["directory", 0o755],
    });
    expect(contentOf(entries, "a/run.sh")).toBe("#!/bin/sh\necho hi\n");
    expect(contentOf(entries, "b.txt")).toBe("bee");
  });

  it("is byte-identical for equal trees created differently", async () => {
    const tree = { "main.py": "print(1)\n", "src/model.py": randomBytes(70_000), "src/empty": null, "README": "" };
    const first = await makeTempDir();
    const second = await makeTempDir();
    await writeTree(first, tree);
    await writeTree(second, Object.fromEntries(Object.entries(tree).reverse()));
    await utimes(path.join(first, "main.py"), new Date("2021-05-01"), new Date("2021-05-01"));
    await utimes(path.join(second, "src/model.py"), new Date("2011-05-01"), new Date("2011-05-01"));
    await chmod(path.join(second, "main.py"), 0o600);

    const firstArchive = await pack(first);
    expect(firstArchive.length).toBeGreaterThan(70_000);
    expect((await pack(second)).equals(firstArchive)).toBe(true);

    // The executable bit is content, so it must change the archive.
    await chmod(path.join(second, "main.py"), 0o755);
    expect((await pack(second)).equals(firstArchive)).toBe(false);
  });

  it("round-trips large files, long paths, non-ASCII names and long link targets", async () => {
    const root = await makeTempDir();
    const large = randomBytes(1_500_000 + 123);
    const ustarPrefixPath = `${"p".repeat(80)}/${"q".repeat(60)}/file.txt`; // > 100 chars, fits prefix + name
    const paxPath = `${"x".repeat(120)}/${"y".repeat(120)}/${"z".repeat(120)}.txt`; // needs a pax header
    const longTarget = `${"t".repeat(150)}.txt`;
    await writeTree(root, { "large.bin": large, [ustarPrefixPath]: "prefixed", [paxPath]: "pax", "données/ñandú.txt": "unicode", [longTarget]: "target" });
    await symlink(longTarget, path.join(root, "long-link"));

    const archive = await pack(root);
    const entries = await readTar(archive);

    expect(entries.find((entry) => entry.name === "large.bin")?.content.equals(large)).toBe(true);
    expect(contentOf(entries, ustarPrefixPath)).toBe("prefixed");
    expect(contentOf(entries, paxPath)).toBe("pax");
    expect(contentOf(entries, "données/ñandú.txt")).toBe("unicode");
    expect(entries.find((entry) => entry.name === "long-link")).toMatchObject({ type: "symlink", linkname: longTarget });
    expect(archive.length % 512).toBe(0);

    // A second, independent reader (GNU tar) must see the same entries.
    if (hasGnuTar()) {
      const listed = execFileSync("tar", ["-tf", "-"], { input: archive }).toString("utf8").trim().split("\n");
      expect(listed).toEqual(namesOf(entries));
    }
  });

  it("adds extra files at the end, replacing a same-named source file", async () => {
    const root = await makeTempDir();
    await writeTree(root, { Dockerfile: "FROM source", "main.py": "m", "zzz.py": "z" });

    const entries = await readTar(
      await pack(root, {
        extraFiles: [
          { name: "Dockerfile", content: "FROM generated" },
          { name: "./.m1l0.Dockerfile", content: Buffer.from("FROM other"), mode: 0o755 },
        ],
      }),
    );

    expect(namesOf(entries)).toEqual(["main.py", "zzz.py", "Dockerfile", ".m1l0.Dockerfile"]);
    expect(contentOf(entries, "Dockerfile")).toBe("FROM generated");
    expect(entries.at(-1)).toMatchObject({ mode: 0o755, uid: 0 });
  });

  it("rejects extra file names that leave the context", async () => {
    const root = await makeTempDir();
    const filter = await createContextFilter(root, []);
    expect(() => packContext(root, { filter, extraFiles: [{ name: "../Dockerfile", content: "x" }] })).toThrow(BuilderError);
    expect(() => packContext(root, { filter, extraFiles: [{ name: "/Dockerfile", content: "x" }] })).toThrow(BuilderError);
  });

  it("keeps symlinks that stay inside the context and drops, without reading, those that escape", async () => {
    const base = await makeTempDir();
    const root = path.join(base, "context");
    const secret = `TOP-SECRET-${randomBytes(8).toString("hex")}`;
    await writeTree(base, { "secret.txt": secret, "outside/more.txt": secret, "context/main.py": "m", "context/src/util.py": "u" });
    await symlink("../secret.txt", path.join(root, "escape-relative"));
    await symlink(path.join(base, "secret.txt"), path.join(root, "escape-absolute"));
    await symlink("../outside", path.join(root, "escape-directory"));
    // Absolute targets are dropped even inside the context: they would not resolve inside the image.
    await symlink(path.join(root, "main.py"), path.join(root, "absolute-inside"));
    await symlink("../src/../../secret.txt", path.join(root, "src/escape-sneaky"));
    await symlink("../main.py", path.join(root, "src/main-link"));
    await symlink("..", path.join(root, "src/root-link"));
    await symlink("missing.txt", path.join(root, "dangling"));

    const archive = await pack(root);
    const entries = await readTar(archive);

    expect(namesOf(entries)).toEqual(["dangling", "main.py", "src/", "src/main-link", "src/root-link", "src/util.py"]);
    expect(entries.find((entry) => entry.name === "src/main-link")).toMatchObject({ type: "symlink", linkname: "../main.py", content: Buffer.alloc(0) });
    expect(entries.find((entry) => entry.name === "src/root-link")).toMatchObject({ type: "symlink", linkname: ".." });
    expect(archive.includes(Buffer.from(secret))).toBe(false);
  });

  it("skips sockets and FIFOs", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "main.py": "m" });
    const server = createServer();
    server.listen(path.join(root, "daemon.sock"));
    await once(server, "listening");
    try {
      if (hasCommand("mkfifo")) execFileSync("mkfifo", [path.join(root, "pipe")]);
      expect(existsSync(path.join(root, "daemon.sock"))).toBe(true);
      expect(namesOf(await readTar(await pack(root)))).toEqual(["main.py"]);
    } finally {
      server.close();
    }
  });

  it("fails with ARCHIVE_INVALID past maxFiles, counting files, directories and links", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "a/1.txt": "1", "a/2.txt": "2", "b/3.txt": "3" }); // 5 entries

    expect(namesOf(await readTar(await pack(root, { maxFiles: 5 })))).toHaveLength(5);
    const failure = pack(root, { maxFiles: 4 });
    await expect(failure).rejects.toBeInstanceOf(BuilderError);
    await expect(failure).rejects.toMatchObject({ code: "ARCHIVE_INVALID", message: expect.stringMatching(/more than 4 files/) });
  });

  it("fails with ARCHIVE_INVALID past maxBytes", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "a.bin": Buffer.alloc(600), "b.bin": Buffer.alloc(400) });

    expect(namesOf(await readTar(await pack(root, { maxBytes: 1000 })))).toEqual(["a.bin", "b.bin"]);
    const failure = pack(root, { maxBytes: 999 });
    await expect(failure).rejects.toBeInstanceOf(BuilderError);
    await expect(failure).rejects.toMatchObject({ code: "ARCHIVE_INVALID", message: expect.stringMatching(/larger than 999 bytes/) });
  });

  it("fails with ARCHIVE_INVALID when the root does not exist", async () => {
    const base = await makeTempDir();
    await expect(pack(path.join(base, "missing"))).rejects.toMatchObject({ code: "ARCHIVE_INVALID" });
  });

  it("produces data only as it is read and releases files when the reader stops", async () => {
    const root = await blobTree(16);
    const filter = await createContextFilter(root, []);
    const openFilesBefore = countOpenFiles();

    const stream = packContext(root, { filter });
    await once(stream, "readable");
    await new Promise((resolve) => setTimeout(resolve, 200));
    // 16 MiB of context, but only about one high-water mark is produced while nobody reads.
    expect(stream.readableLength).toBeGreaterThan(0);
    expect(stream.readableLength).toBeLessThanOrEqual(2 * 1024 * 1024);

    stream.destroy();
    await once(stream, "close");
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (openFilesBefore !== null) expect(countOpenFiles()).toBe(openFilesBefore);
  });

  it("lets the event loop turn while a greedy reader consumes a large context", async () => {
    const root = await blobTree(24);
    const filter = await createContextFilter(root, []);
    let bytes = 0;
    const turns = await loopTurnsDuring(async () => {
      for await (const chunk of packContext(root, { filter })) bytes += (chunk as Buffer).length;
    });
    expect(bytes).toBeGreaterThan(24 * 1024 * 1024);
    // the producer is synchronous; without yielding, for-await would keep it on nextTick and the loop would never turn
    expect(turns).toBeGreaterThanOrEqual(3);
  });

  it("falls back to descending into ignored directories when a custom filter has exceptions", async () => {
    const root = await makeTempDir();
    await writeTree(root, { "data/keep.txt": "k", "data/drop.txt": "d", "main.py": "m" });
    const filter: ContextFilter = {
      patterns: ["data", "!data/keep.txt"],
      isIgnored: (relPath) => relPath.startsWith("data") && relPath !== "data/keep.txt",
    };
    expect(namesOf(await readTar(await collect(packContext(root, { filter }))))).toEqual(["data/", "data/keep.txt", "main.py"]);
  });
});

describe("contextHasFile", () => {
  it("is true only for present, regular, non-ignored files inside the root", async () => {
    const base = await makeTempDir();
    const root = path.join(base, "context");
    await writeTree(base, {
      "outside.py": "o",
      "context/main.py": "m",
      "context/src/train.py": "t",
      "context/notes.md": "n",
      "context/data/keep.py": "k",
      "context/data/drop.py": "d",
      "context/pkg": null,
    });
    await symlink("main.py", path.join(root, "link.py"));
    await mkdir(path.join(root, "real"));
    await writeFile(path.join(root, "real/inner.py"), "i");
    await symlink("real", path.join(root, "linked-dir"));
    const filter = await createContextFilter(root, ["*.md", "data", "!data/keep.py"]);

    expect(await contextHasFile(root, filter, "main.py")).toBe(true);
    expect(await contextHasFile(root, filter, "src/train.py")).toBe(true);
    expect(await contextHasFile(root, filter, "./src/train.py")).toBe(true);
    expect(await contextHasFile(root, filter, "data/keep.py")).toBe(true);
    expect(await contextHasFile(root, filter, "data/drop.py")).toBe(false); // ignored
    expect(await contextHasFile(root, filter, "notes.md")).toBe(false); // ignored
    expect(await contextHasFile(root, filter, "missing.py")).toBe(false);
    expect(await contextHasFile(root, filter, "pkg")).toBe(false); // a directory
    expect(await contextHasFile(root, filter, "link.py")).toBe(false); // a symlink, not a regular file
    expect(await contextHasFile(root, filter, "linked-dir/inner.py")).toBe(false); // reached through a symlink
    expect(await contextHasFile(root, filter, "../outside.py")).toBe(false);
    expect(await contextHasFile(root, filter, path.join(base, "outside.py"))).toBe(false);
  });
});

function hasCommand(command: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function hasGnuTar(): boolean {
  try {
    return execFileSync("tar", ["--version"]).toString().includes("GNU tar");
  } catch {
    return false;
  }
}
