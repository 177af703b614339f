import { createWriteStream } from "node:fs";
import { chmod, link, lstat, mkdir, symlink, unlink } from "node:fs/promises";
import path from "node:path";
import { Transform, type Readable, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { BuilderError, formatBytes } from "@m1l0/config";
import * as tar from "tar-stream";
import { DEFAULT_ARCHIVE_LIMITS, type ArchiveLimits } from "./types.js";

export interface ExtractOptions {
  limits?: Partial<ArchiveLimits>;
  /** names the archive in error messages, e.g. s3://bucket/key.tar.gz */
  label?: string;
  signal?: AbortSignal;
}

export interface ExtractStats {
  files: number;
  directories: number;
  symlinks: number;
  /** sum of the regular files' sizes */
  bytes: number;
  /** gzip bytes read */
  compressedBytes: number;
}

function safeName(name: string): string {
  const clean = name.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, "?");
  return clean.length > 200 ? `${clean.slice(0, 200)}…` : clean;
}

/** Fails the stream as soon as more than `max` bytes went through it. */
/** What this module reads from a tar-stream header (its typings omit the null type of unknown entries). */
interface EntryHeader {
  name: string;
  size?: number;
  mode?: number;
  type?: string | null;
  linkname?: string | null;
}

/** A tar-stream entry body (a streamx Readable, not a Node one). */
type EntryStream = AsyncIterable<unknown> & { resume(): unknown };

class ByteCap extends Transform {
  bytes = 0;
  constructor(
    private readonly max: number,
    private readonly describe: (max: number) => string,
  ) {
    super();
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.max) {
      callback(new BuilderError("ARCHIVE_INVALID", this.describe(this.max)));
      return;
    }
    callback(null, chunk);
  }
}

/**
 * Normalises a tar entry name to a relative POSIX path ("" for the root itself).
 * `tar -czf x.tar.gz -C dir .` names entries "./a/b"; the "./" is dropped.
 */
function entryPath(name: string, label: string): string {
  if (name.includes("\0")) throw invalidEntry(label, name, "the name contains a NUL byte");
  if (name.startsWith("/") || /^[A-Za-z]:[\\/]/.test(name)) throw invalidEntry(label, name, "absolute paths are not allowed");
  const parts = name.split("/").filter((part) => part !== "" && part !== ".");
  if (parts.includes("..")) throw invalidEntry(label, name, "'..' path segments are not allowed");
  return parts.join("/");
}

function invalidEntry(label: string, name: string, why: string): BuilderError {
  return new BuilderError("ARCHIVE_INVALID", `${label}: entry '${safeName(name)}' rejected: ${why}`);
}

/**
 * Checks that a symlink stays inside the extraction root however it is resolved: the target
 * must be relative, its leading ".." may climb at most to the root, and no ".." may follow a
 * name (a name can itself be a symlink, after which ".." would climb from somewhere else).
 * Because nothing is ever written through a symlink, every directory the link sits in is real.
 */
function checkSymlinkTarget(label: string, entry: string, target: string): void {
  if (target === "") throw invalidEntry(label, entry, "the symlink has an empty target");
  if (target.includes("\0")) throw invalidEntry(label, entry, "the symlink target contains a NUL byte");
  if (target.startsWith("/")) throw invalidEntry(label, entry, `symlink to an absolute path (${safeName(target)}) escapes the archive`);
  const depth = entry.split("/").length - 1;
  let ups = 0;
  let seenName = false;
  for (const part of target.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (seenName) throw invalidEntry(label, entry, `symlink target ${safeName(target)} uses '..' after a directory name`);
      ups++;
      if (ups > depth) throw invalidEntry(label, entry, `symlink target ${safeName(target)} escapes the archive`);
    } else {
      seenName = true;
    }
  }
}

function isFsConflict(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOTDIR" || code === "EISDIR" || code === "EEXIST" || code === "ENAMETOOLONG" || code === "ELOOP";
}

async function lstatOrUndefined(file: string) {
  try {
    return await lstat(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/**
 * Extracts a gzip-compressed tar stream into `dest` (an existing, empty directory), checking
 * every entry while streaming: no absolute paths, no `..`, no links escaping `dest`, no
 * devices or FIFOs, and caps on compressed bytes, uncompressed bytes and entries. A cap
 * fails the extraction as soon as it is crossed. Violations, corrupt gzip and corrupt tar
 * data are ARCHIVE_INVALID; an error of the `input` stream itself is SOURCE_FETCH_FAILED.
 * Nothing is written outside `dest`; on failure `dest` may hold a partial extraction.
 */
export async function extractTarGz(input: Readable, dest: string, options: ExtractOptions = {}): Promise<ExtractStats> {
  const limits: ArchiveLimits = { ...DEFAULT_ARCHIVE_LIMITS, ...options.limits };
  const label = options.label ?? "archive";
  const root = path.resolve(dest);
  const stats: ExtractStats = { files: 0, directories: 0, symlinks: 0, bytes: 0, compressedBytes: 0 };

  /** regular files (relative path → size) written by this extraction: the only valid hard-link targets */
  const files = new Map<string, number>();
  /** paths (relative) of symlinks created: nothing may be written beneath them */
  const symlinks = new Set<string>();
  let entries = 0;
  let declaredBytes = 0;

  let inputError: unknown;
  input.on("error", (error) => {
    inputError ??= error;
  });

  const compressed = new ByteCap(
    limits.maxCompressedBytes,
    (max) => `${label} is larger than the ${formatBytes(max)} limit for compressed archives`,
  );
  const uncompressed = new ByteCap(
    limits.maxUncompressedBytes,
    (max) => `${label} expands to more than the ${formatBytes(max)} limit for uncompressed content`,
  );
  const extract = tar.extract();

  const prepare = async (rel: string, name: string): Promise<string> => {
    const parts = rel.split("/");
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join("/");
      if (symlinks.has(prefix)) throw invalidEntry(label, name, `it lies beneath the symlink '${safeName(prefix)}'`);
    }
    const target = path.join(root, rel);
    await mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
    return target;
  };

  /** Removes a previous non-directory entry at `target` (tar semantics: later entries win); refuses to replace a directory. */
  const replace = async (target: string, rel: string, name: string): Promise<void> => {
    const existing = await lstatOrUndefined(target);
    if (!existing) return;
    if (existing.isDirectory()) throw invalidEntry(label, name, "it would replace a directory");
    await unlink(target);
    files.delete(rel);
    symlinks.delete(rel);
  };

  const handle = async (header: EntryHeader, stream: EntryStream): Promise<void> => {
    entries++;
    if (entries > limits.maxEntries) {
      throw new BuilderError("ARCHIVE_INVALID", `${label} has more than ${limits.maxEntries} entries (the limit)`);
    }
    const name = header.name;
    // tar-stream reports unknown type flags as null; POSIX says to extract those as regular files.
    const type = header.type ?? "file";
    const size = header.size ?? 0;
    if (type === "pax-global-header") {
      stream.resume();
      return;
    }
    if (type === "character-device" || type === "block-device" || type === "fifo") {
      throw invalidEntry(label, name, `${type} entries are not allowed`);
    }
    if (type !== "file" && type !== "contiguous-file" && type !== "directory" && type !== "symlink" && type !== "link") {
      throw invalidEntry(label, name, `unsupported entry type ${String(header.type)}`);
    }
    declaredBytes += size;
    if (declaredBytes > limits.maxUncompressedBytes) {
      throw new BuilderError(
        "ARCHIVE_INVALID",
        `${label} expands to more than the ${formatBytes(limits.maxUncompressedBytes)} limit for uncompressed content (entry '${safeName(name)}' alone is ${formatBytes(size)})`,
      );
    }
    const rel = entryPath(name, label);
    const mode = (header.mode ?? 0o644) & 0o777;

    if (type === "directory") {
      stream.resume();
      if (rel === "") return;
      const target = await prepare(rel, name);
      const existing = await lstatOrUndefined(target);
      if (existing && !existing.isDirectory()) await replace(target, rel, name);
      if (!existing?.isDirectory()) stats.directories++;
      await mkdir(target, { recursive: true });
      await chmod(target, mode | 0o700);
      return;
    }

    if (rel === "") throw invalidEntry(label, name, `a ${type} entry cannot be the archive root`);

    if (type === "symlink") {
      stream.resume();
      const linkTarget = header.linkname ?? "";
      checkSymlinkTarget(label, name, linkTarget);
      const target = await prepare(rel, name);
      await replace(target, rel, name);
      await symlink(linkTarget, target);
      symlinks.add(rel);
      return;
    }

    if (type === "link") {
      stream.resume();
      const linkName = header.linkname ?? "";
      if (linkName.startsWith("/")) throw invalidEntry(label, name, `hard link to an absolute path (${safeName(linkName)}) escapes the archive`);
      let from: string;
      try {
        from = entryPath(linkName, label);
      } catch {
        throw invalidEntry(label, name, `hard link target ${safeName(linkName)} escapes the archive`);
      }
      if (!files.has(from)) {
        throw invalidEntry(label, name, `hard link target ${safeName(linkName)} is not a regular file extracted earlier from this archive`);
      }
      const target = await prepare(rel, name);
      if (from === rel) return;
      await replace(target, rel, name);
      await link(path.join(root, from), target);
      files.set(rel, files.get(from) ?? 0);
      return;
    }

    // regular file
    const target = await prepare(rel, name);
    await replace(target, rel, name);
    // "wx": O_CREAT|O_EXCL never follows a symlink planted at the target.
    await pipeline(stream, createWriteStream(target, { flags: "wx", mode: 0o600 }));
    await chmod(target, mode | 0o600);
    files.set(rel, size);
  };

  extract.on("entry", (header, stream, next) => {
    // Errors reach us through `extract`; an entry stream destroyed along with it must not throw.
    stream.on("error", () => undefined);
    handle(header, stream).then(
      () => next(),
      (error: unknown) => {
        stream.resume();
        const failure = isFsConflict(error) && !(error instanceof BuilderError) ? invalidEntry(label, header.name, (error as Error).message) : error;
        next(failure instanceof Error ? failure : new Error(String(failure)));
      },
    );
  });

  try {
    await pipeline(input, compressed, createGunzip(), uncompressed, extract, options.signal ? { signal: options.signal } : {});
  } catch (error) {
    if (options.signal?.aborted) throw options.signal.reason ?? error;
    if (error instanceof BuilderError) throw error;
    if (inputError !== undefined && error === inputError) {
      throw new BuilderError("SOURCE_FETCH_FAILED", `download of ${label} failed: ${(error as Error).message}`, { cause: error, retryable: true });
    }
    const code = (error as NodeJS.ErrnoException).code ?? "";
    if (code.startsWith("Z_")) {
      throw new BuilderError("ARCHIVE_INVALID", `${label} is not a valid gzip file (${(error as Error).message}); expected a .tar.gz made with e.g. tar -czf x.tar.gz -C dir .`, {
        cause: error,
      });
    }
    // File-system errors (ENOSPC, EACCES…) carry a syscall; anything else came from the tar parser.
    if (error instanceof Error && (error as NodeJS.ErrnoException).syscall === undefined) {
      throw new BuilderError("ARCHIVE_INVALID", `${label} is not a valid tar archive: ${error.message}`, { cause: error });
    }
    throw error;
  }
  stats.compressedBytes = compressed.bytes;
  stats.files = files.size;
  stats.symlinks = symlinks.size;
  for (const size of files.values()) stats.bytes += size;
  return stats;
}
