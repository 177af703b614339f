import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { BuilderError } from "@m1l0/config";
import * as tar from "tar-stream";
import { expect } from "vitest";

export const GIT_SERVER_URL = (process.env.GIT_SERVER_URL ?? "http://127.0.0.1:8174").replace(/\/+$/, "");
export const GIT_FIXTURES_DIR = process.env.GIT_FIXTURES_DIR ?? "/var/lib/m1l0-dev/git";
export const S3_ENDPOINT = process.env.S3_ENDPOINT ?? "http://127.0.0.1:4569";
export const S3_BUCKET = process.env.S3_BUCKET ?? "m1l0-builds";
export const PRIVATE_USERNAME = process.env.GIT_PRIVATE_USERNAME ?? "m1l0-bot";
export const PRIVATE_TOKEN = process.env.GIT_PRIVATE_TOKEN ?? "m1l0-local-git-token";

export function git(cwd: string, ...args: string[]): string {
  return execFileSync("git", ["-c", "user.name=m1l0-test", "-c", "user.email=test@m1l0.local", ...args], {
    cwd,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  }).trim();
}

/** The sha a remote ref points at, asked with the git CLI (independent of the code under test). */
export function lsRemote(url: string, ref: string): string {
  const line = git(os.tmpdir(), "ls-remote", url, ref).split("\n")[0] ?? "";
  const sha = line.split("\t")[0] ?? "";
  expect(sha).toMatch(/^[0-9a-f]{40}$/);
  return sha;
}

/**
 * A scratch area for one test: `workDir` is `<base>/a/b/work` so that anything escaping it
 * (`../x`, `../../x`) lands inside `<base>` where `outsideWork()` finds it.
 */
export async function scratch(): Promise<{ base: string; workDir: string; outsideWork: () => Promise<string[]>; cleanup: () => Promise<void> }> {
  const base = await mkdtemp(path.join(os.tmpdir(), "m1l0-source-test-"));
  const workDir = path.join(base, "a", "b", "work");
  await mkdir(workDir, { recursive: true });
  return {
    base,
    workDir,
    outsideWork: async () => (await listTree(base)).filter((entry) => !["a", "a/b", "a/b/work"].includes(entry) && !entry.startsWith("a/b/work/")),
    cleanup: () => rm(base, { recursive: true, force: true }),
  };
}

/** Every path under `dir`, relative, without following symlinks. */
export async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.map((entry) => entry.split(path.sep).join("/")).sort();
}

export async function rejection(promise: Promise<unknown>): Promise<BuilderError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected the promise to reject").toBeInstanceOf(BuilderError);
  return error as BuilderError;
}

export interface TarEntry {
  header: tar.Header | (Partial<tar.Header> & { name: string });
  content?: string | Buffer;
  /** stream this many zero bytes as the entry's body (header.size is set to it) */
  zeros?: number;
}

async function writeZeros(sink: NodeJS.WritableStream | { write(chunk: Buffer): boolean; once(event: string, cb: () => void): unknown; end(): void }, count: number): Promise<void> {
  const chunk = Buffer.alloc(1024 * 1024);
  let left = count;
  while (left > 0) {
    const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
    left -= piece.length;
    if (!sink.write(piece)) await new Promise<void>((resolve) => sink.once("drain", () => resolve()));
  }
}

/** A .tar.gz built with tar-stream: lets tests write entries no well-behaved tar would. */
export async function makeTarGz(entries: TarEntry[], options: { trailingZeros?: number } = {}): Promise<Buffer> {
  const pack = tar.pack();
  const gzip = createGzip();
  const chunks: Buffer[] = [];
  const collect = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  const done = pipeline(gzip, collect);
  const packed = (async () => {
    for await (const chunk of pack) {
      if (!gzip.write(chunk as Buffer)) await new Promise<void>((resolve) => gzip.once("drain", () => resolve()));
    }
  })();
  for (const entry of entries) {
    if (entry.zeros !== undefined) {
      const sink = pack.entry({ ...entry.header, size: entry.zeros });
      await writeZeros(sink as unknown as NodeJS.WritableStream, entry.zeros);
      await new Promise<void>((resolve, reject) => {
        sink.once("error", reject);
        sink.end(() => resolve());
      });
    } else {
      await new Promise<void>((resolve, reject) => pack.entry(entry.header, entry.content ?? "", (error) => (error ? reject(error) : resolve())));
    }
  }
  pack.finalize();
  await packed;
  if (options.trailingZeros) await writeZeros(gzip, options.trailingZeros);
  gzip.end();
  await done;
  return Buffer.concat(chunks);
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}
