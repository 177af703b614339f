import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { chmod, link, lstat, mkdir, readFile, readlink, stat, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { createS3Client, deleteObject, putObject } from "@m1l0/storage";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { extractTarGz, fetchSource, type ArchiveLimits } from "../src/index.js";
import { S3_BUCKET, S3_ENDPOINT, listTree, makeTarGz, rejection, scratch, type TarEntry } from "./helpers.js";

const client = createS3Client({
  endpoint: S3_ENDPOINT,
  region: "us-east-1",
  forcePathStyle: true,
  credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" },
});
const prefix = `test/source/${randomUUID()}`;
const keys: string[] = [];
const policy = { allowHttp: false, allowDir: false };
const MiB = 1024 * 1024;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});
afterAll(async () => {
  for (const key of keys) await deleteObject(client, S3_BUCKET, key).catch(() => undefined);
  client.destroy();
});

async function upload(name: string, body: Buffer | Readable): Promise<string> {
  const key = `${prefix}/${name}`;
  keys.push(key);
  await putObject(client, S3_BUCKET, key, body, "application/gzip");
  return `s3://${S3_BUCKET}/${key}`;
}

async function fetchArchive(source: string, limits?: Partial<ArchiveLimits>) {
  const area = await scratch();
  cleanups.push(area.cleanup);
  const logs: string[] = [];
  const promise = fetchSource({ source, workDir: area.workDir, policy, s3: { client }, onLog: (line) => logs.push(line), ...(limits ? { limits } : {}) });
  return { area, logs, promise };
}

/** Uploads a hostile archive, expects ARCHIVE_INVALID mentioning `message`, and that nothing landed outside workDir. */
async function expectRejected(name: string, entries: TarEntry[], message: RegExp | string, limits?: Partial<ArchiveLimits>) {
  const source = await upload(`${name}.tar.gz`, await makeTarGz(entries));
  const { area, promise } = await fetchArchive(source, limits);
  const error = await rejection(promise);
  expect(error.code).toBe("ARCHIVE_INVALID");
  expect(error.message).toMatch(message);
  expect(error.message).toContain(source);
  expect(await area.outsideWork()).toEqual([]);
  return { area, error };
}

describe("s3 archive sources", () => {
  it("extracts a flat archive made by the system tar (./ prefixes, modes, symlinks, hard links)", async () => {
    const project = await scratch();
    cleanups.push(project.cleanup);
    const dir = path.join(project.base, "project");
    await mkdir(path.join(dir, "data", "nested"), { recursive: true });
    await writeFile(path.join(dir, "main.py"), "print('hello')\n");
    await writeFile(path.join(dir, "run.sh"), "#!/bin/sh\necho run\n");
    await chmod(path.join(dir, "run.sh"), 0o755);
    await writeFile(path.join(dir, "data", "nested", "weights.bin"), randomBytes(64 * 1024));
    await symlink("data/nested/weights.bin", path.join(dir, "latest.bin"));
    await link(path.join(dir, "main.py"), path.join(dir, "main-copy.py"));
    const tarball = path.join(project.base, "project.tar.gz");
    execFileSync("tar", ["-czf", tarball, "-C", dir, "."]);
    expect(execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" })).toContain("./main.py");

    const source = await upload("project.tar.gz", createReadStream(tarball));
    const { area, logs, promise } = await fetchArchive(source);
    const fetched = await promise;
    expect(fetched).toEqual({ kind: "s3", root: area.workDir });
    expect(await listTree(area.workDir)).toEqual(await listTree(dir));
    expect(await readFile(path.join(area.workDir, "main.py"), "utf8")).toBe("print('hello')\n");
    expect(await readFile(path.join(area.workDir, "main-copy.py"), "utf8")).toBe("print('hello')\n");
    expect((await readFile(path.join(area.workDir, "data", "nested", "weights.bin"))).equals(await readFile(path.join(dir, "data", "nested", "weights.bin")))).toBe(true);
    expect((await stat(path.join(area.workDir, "run.sh"))).mode & 0o777).toBe(0o755);
    expect(await readlink(path.join(area.workDir, "latest.bin"))).toBe("data/nested/weights.bin");
    expect(logs[0]).toMatch(new RegExp(`^downloading ${source.replace(/[./]/g, "\\$&")} \\(\\d`));
    expect(logs).toContain("extracted 4 files, 2 directories, 1 symlinks (64.0 KiB)");
  });

  it("fails with SOURCE_NOT_FOUND for a missing key", async () => {
    const source = `s3://${S3_BUCKET}/${prefix}/missing.tar.gz`;
    const error = await rejection((await fetchArchive(source)).promise);
    expect(error.code).toBe("SOURCE_NOT_FOUND");
    expect(error.message).toContain(source);
  });

  it("refuses s3 sources when the worker has no S3 client", async () => {
    const area = await scratch();
    cleanups.push(area.cleanup);
    const error = await rejection(fetchSource({ source: `s3://${S3_BUCKET}/x.tar.gz`, workDir: area.workDir, policy }));
    expect(error.code).toBe("SOURCE_NOT_ALLOWED");
  });

  it("rejects an entry climbing out with ..", async () => {
    const { area } = await expectRejected(
      "dotdot",
      [
        { header: { name: "./ok.txt" }, content: "fine" },
        { header: { name: "../../escape.txt" }, content: "pwned" },
        { header: { name: "./later.txt" }, content: "never reached" },
      ],
      /'\.\.\/\.\.\/escape\.txt' rejected: '\.\.' path segments are not allowed/,
    );
    expect(existsSync(path.join(area.base, "a", "escape.txt"))).toBe(false);
    expect(existsSync(path.join(area.workDir, "later.txt"))).toBe(false);
  });

  it("rejects an absolute path", async () => {
    const target = path.join(os.tmpdir(), `m1l0-abs-${randomUUID()}.txt`);
    await expectRejected("absolute", [{ header: { name: target }, content: "pwned" }], /absolute paths are not allowed/);
    expect(existsSync(target)).toBe(false);
  });

  it("rejects a symlink to an absolute path such as /etc/passwd", async () => {
    const { area } = await expectRejected("symlink-abs", [{ header: { name: "./passwd", type: "symlink", linkname: "/etc/passwd" } }], /symlink to an absolute path \(\/etc\/passwd\) escapes/);
    expect(existsSync(path.join(area.workDir, "passwd"))).toBe(false);
  });

  it("rejects a relative symlink climbing out of the root", async () => {
    await expectRejected("symlink-up", [{ header: { name: "dir/up", type: "symlink", linkname: "../../x" } }], /escapes the archive/);
  });

  it("rejects writing through a symlink, even one pointing inside", async () => {
    const { area } = await expectRejected(
      "through-symlink",
      [
        { header: { name: "real", type: "directory" } },
        { header: { name: "alias", type: "symlink", linkname: "real" } },
        { header: { name: "alias/file.txt" }, content: "through the link" },
      ],
      /beneath the symlink 'alias'/,
    );
    expect(existsSync(path.join(area.workDir, "real", "file.txt"))).toBe(false);
  });

  it("rejects a symlink whose '..' follows a name (it could climb out through another symlink)", async () => {
    await expectRejected(
      "symlink-chain",
      [
        { header: { name: "p/q/r/top", type: "symlink", linkname: "../../.." } },
        { header: { name: "s", type: "symlink", linkname: "p/q/r/top/../../.." } },
      ],
      /uses '\.\.' after a directory name/,
    );
  });

  it("rejects hard links to paths outside the archive", async () => {
    await expectRejected("hardlink-abs", [{ header: { name: "h", type: "link", linkname: "/etc/passwd" } }], /hard link to an absolute path/);
    await expectRejected("hardlink-up", [{ header: { name: "h", type: "link", linkname: "../outside" } }], /hard link target \.\.\/outside escapes/);
  });

  it("rejects device and fifo entries", async () => {
    await expectRejected("chardev", [{ header: { name: "./null", type: "character-device", devmajor: 1, devminor: 3 } }], /character-device entries are not allowed/);
    await expectRejected("fifo", [{ header: { name: "./pipe", type: "fifo" } }], /fifo entries are not allowed/);
  });

  it("stops a gzip bomb (one 200 MB entry of zeros) as soon as the 10 MB cap is crossed", async () => {
    const bomb = await makeTarGz([{ header: { name: "./zeros.bin" }, zeros: 200 * MiB }]);
    expect(bomb.length).toBeLessThan(1 * MiB);
    const source = await upload("bomb.tar.gz", bomb);
    const { area, promise } = await fetchArchive(source, { maxUncompressedBytes: 10 * MiB });
    const started = Date.now();
    const error = await rejection(promise);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(error.code).toBe("ARCHIVE_INVALID");
    expect(error.message).toContain("expands to more than the 10.0 MiB limit");
    expect(existsSync(path.join(area.workDir, "zeros.bin"))).toBe(false);
  });

  it("stops a gzip bomb hidden after the end of the tar (zeros the tar reader would skip forever)", async () => {
    const bomb = await makeTarGz([{ header: { name: "./small.txt" }, content: "tiny" }], { trailingZeros: 200 * MiB });
    const source = await upload("trailing-bomb.tar.gz", bomb);
    const { promise } = await fetchArchive(source, { maxUncompressedBytes: 10 * MiB });
    const error = await rejection(promise);
    expect(error.code).toBe("ARCHIVE_INVALID");
    expect(error.message).toContain("expands to more than the 10.0 MiB limit");
  });

  it("stops once the files written add up past the uncompressed cap", async () => {
    const entries = Array.from({ length: 30 }, (_, i) => ({ header: { name: `./part-${String(i).padStart(2, "0")}.bin` }, zeros: MiB }));
    const { area } = await expectRejected("many-files", entries, /expands to more than the 10\.0 MiB limit/, { maxUncompressedBytes: 10 * MiB });
    const written = await listTree(area.workDir);
    expect(written.length).toBeLessThanOrEqual(10);
  });

  it("enforces the entry count cap", async () => {
    const entries = Array.from({ length: 50 }, (_, i) => ({ header: { name: `./f${i}` }, content: "" }));
    const { area } = await expectRejected("entries", entries, /has more than 10 entries/, { maxEntries: 10 });
    expect((await listTree(area.workDir)).length).toBe(10);
  });

  it("enforces the compressed size cap from the object's size before reading it", async () => {
    const source = await upload("big.tar.gz", await makeTarGz([{ header: { name: "./random.bin" }, content: randomBytes(2 * MiB) }]));
    const { area, promise } = await fetchArchive(source, { maxCompressedBytes: MiB });
    const error = await rejection(promise);
    expect(error.code).toBe("ARCHIVE_INVALID");
    expect(error.message).toMatch(/is 2\.0 MiB, over the 1\.0 MiB limit for compressed archives/);
    expect(await listTree(area.workDir)).toEqual([]);
  });

  it("rejects data that is not gzip, and a truncated archive", async () => {
    const notGzip = await upload("not-gzip.tar.gz", Buffer.from("this is not a gzip stream\n".repeat(100)));
    const error = await rejection((await fetchArchive(notGzip)).promise);
    expect(error.code).toBe("ARCHIVE_INVALID");
    expect(error.message).toContain("is not a valid gzip file");

    const whole = await makeTarGz([{ header: { name: "./data.bin" }, content: randomBytes(256 * 1024) }]);
    const truncated = await upload("truncated.tar.gz", whole.subarray(0, Math.floor(whole.length / 2)));
    const cut = await rejection((await fetchArchive(truncated)).promise);
    expect(cut.code).toBe("ARCHIVE_INVALID");
  });

  it("rejects gzip data that is not a tar", async () => {
    const { gzipSync } = await import("node:zlib");
    const source = await upload("not-tar.tar.gz", gzipSync(Buffer.from("hello world, definitely not a tar header\n".repeat(40))));
    const error = await rejection((await fetchArchive(source)).promise);
    expect(error.code).toBe("ARCHIVE_INVALID");
    expect(error.message).toContain("is not a valid tar archive");
  });
});

describe("extractTarGz", () => {
  it("enforces the compressed cap while streaming when the size is unknown", async () => {
    const area = await scratch();
    cleanups.push(area.cleanup);
    const archive = await makeTarGz([{ header: { name: "./random.bin" }, content: randomBytes(2 * MiB) }]);
    const error = await rejection(extractTarGz(Readable.from([archive.subarray(0, MiB), archive.subarray(MiB)]), area.workDir, { limits: { maxCompressedBytes: MiB } }));
    expect(error.code).toBe("ARCHIVE_INVALID");
    expect(error.message).toBe("archive is larger than the 1.0 MiB limit for compressed archives");
  });

  it("reports a failing input stream as a retryable SOURCE_FETCH_FAILED", async () => {
    const area = await scratch();
    cleanups.push(area.cleanup);
    const archive = await makeTarGz([{ header: { name: "./random.bin" }, content: randomBytes(MiB) }]);
    const input = new Readable({ read() {} });
    input.push(archive.subarray(0, 1024));
    setTimeout(() => input.destroy(new Error("connection reset by peer")), 20);
    const error = await rejection(extractTarGz(input, area.workDir, { label: "upload" }));
    expect(error.code).toBe("SOURCE_FETCH_FAILED");
    expect(error.retryable).toBe(true);
    expect(error.message).toContain("connection reset by peer");
  });

  it("keeps a later entry over an earlier file of the same name and allows links inside", async () => {
    const area = await scratch();
    cleanups.push(area.cleanup);
    const archive = await makeTarGz([
      { header: { name: "./a.txt" }, content: "first" },
      { header: { name: "./a.txt" }, content: "second" },
      { header: { name: "./dir/b.txt" }, content: "b" },
      { header: { name: "./dir/up", type: "symlink", linkname: "../a.txt" } },
      { header: { name: "./hard", type: "link", linkname: "./dir/b.txt" } },
    ]);
    const stats = await extractTarGz(Readable.from([archive]), area.workDir);
    expect(stats).toMatchObject({ files: 3, symlinks: 1, directories: 0 });
    expect(await readFile(path.join(area.workDir, "a.txt"), "utf8")).toBe("second");
    expect(await readFile(path.join(area.workDir, "dir", "up"), "utf8")).toBe("second");
    expect((await lstat(path.join(area.workDir, "dir", "up"))).isSymbolicLink()).toBe(true);
    expect(await readFile(path.join(area.workDir, "hard"), "utf8")).toBe("b");
  });
});
