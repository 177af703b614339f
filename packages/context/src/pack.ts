import { BuilderError, isBuilderError } from "@m1l0/config";
import { closeSync, constants, fstatSync, openSync, readSync, type Dirent } from "node:fs";
import { lstat, readdir, readlink } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { describeError, errorCode, type ContextFilter } from "./filter.js";
import { END_OF_ARCHIVE, encodeHeader, padding, paddedSize, type EntryHeader } from "./tar.js";

export interface ExtraFile {
  name: string;
  content: string | Buffer;
  mode?: number;
}

export interface PackOptions {
  filter: ContextFilter;
  /** files added at the end of the archive, e.g. the generated Dockerfile; they replace a same-named source entry */
  extraFiles?: ExtraFile[];
  /** most entries (files, directories, symlinks) the archive may hold; default 200,000 */
  maxFiles?: number;
  /** most file content bytes the archive may hold; default 10 GiB */
  maxBytes?: number;
}

export const DEFAULT_MAX_FILES = 200_000;
export const DEFAULT_MAX_BYTES = 10 * 1024 ** 3;
/** Fixed so that equal trees give byte-identical archives (Docker's build cache and content digests depend on it). */
export const FIXED_MTIME = new Date(Date.UTC(2000, 0, 1));
const FILE_MODE = 0o644;
const EXECUTABLE_MODE = 0o755;
const DIRECTORY_MODE = 0o755;
const SYMLINK_MODE = 0o777;
/** Read size for file content; also the output buffer, so memory stays a few chunks regardless of context size. */
const CHUNK_SIZE = 512 * 1024;
// O_NOFOLLOW: a file swapped for a symlink after readdir must not be read through; O_NONBLOCK: nor may a FIFO block us.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/**
 * An uncompressed tar of the filtered tree, produced while reading: the archive is generated on demand
 * as the consumer reads, so memory does not grow with the context. Errors destroy the stream with a
 * BuilderError ("ARCHIVE_INVALID" for an unreadable tree or exceeded caps).
 */
export function packContext(root: string, options: PackOptions): Readable {
  const extraFiles = (options.extraFiles ?? []).map(normalizeExtraFile);
  const packer = new ContextPacker(path.resolve(root), options, extraFiles);
  return Readable.from(packer.generate(), { objectMode: false, highWaterMark: CHUNK_SIZE });
}

interface NormalizedExtraFile {
  name: string;
  content: Buffer;
  mode: number;
}

class ContextPacker {
  readonly #root: string;
  readonly #filter: ContextFilter;
  readonly #extraFiles: readonly NormalizedExtraFile[];
  readonly #replacedPaths: ReadonlySet<string>;
  readonly #maxFiles: number;
  readonly #maxBytes: number;
  readonly #hasExceptions: boolean;
  /** Ignored directories we descended into (for `!` exceptions); their headers are written only once something inside is included. */
  readonly #pendingDirectories: string[] = [];
  #entryCount = 0;
  #byteCount = 0;

  constructor(root: string, options: PackOptions, extraFiles: NormalizedExtraFile[]) {
    this.#root = root;
    this.#filter = options.filter;
    this.#extraFiles = extraFiles;
    this.#replacedPaths = new Set(extraFiles.map((file) => file.name));
    this.#maxFiles = positiveLimit(options.maxFiles, DEFAULT_MAX_FILES, "maxFiles");
    this.#maxBytes = positiveLimit(options.maxBytes, DEFAULT_MAX_BYTES, "maxBytes");
    this.#hasExceptions = options.filter.patterns.some((pattern) => pattern.trim().startsWith("!"));
  }

  async *generate(): AsyncGenerator<Buffer> {
    try {
      yield* this.#walk("");
      for (const file of this.#extraFiles) {
        this.#count(file.name, file.content.length);
        yield Buffer.concat([encodeHeader(fileHeader(file.name, file.mode, file.content.length)), file.content, padding(file.content.length)]);
      }
      yield END_OF_ARCHIVE;
    } catch (error) {
      if (isBuilderError(error)) throw error;
      throw new BuilderError("ARCHIVE_INVALID", `cannot pack the build context: ${describeError(error)}`, { cause: error });
    }
  }

  async *#walk(relDir: string): AsyncGenerator<Buffer> {
    const entries = await this.#readDirectory(relDir);
    for (const entry of entries) {
      const relPath = relDir === "" ? entry.name : `${relDir}/${entry.name}`;
      if (this.#replacedPaths.has(relPath)) continue;
      const ignored = this.#filter.isIgnored(relPath);
      if (entry.isDirectory()) {
        if (!ignored) {
          yield* this.#flushPendingDirectories();
          yield this.#directoryHeader(relPath);
          yield* this.#walk(relPath);
        } else if (!this.#canSkipDirectory(relPath)) {
          this.#pendingDirectories.push(relPath);
          yield* this.#walk(relPath);
          if (this.#pendingDirectories.at(-1) === relPath) this.#pendingDirectories.pop();
        }
      } else if (ignored) {
        continue;
      } else if (entry.isFile()) {
        yield* this.#file(relPath);
      } else if (entry.isSymbolicLink()) {
        yield* this.#symlink(relPath);
      }
      // Sockets, FIFOs and devices have no place in a build context.
    }
  }

  async #readDirectory(relDir: string): Promise<Dirent[]> {
    const entries = await readdir(this.#absolute(relDir), { withFileTypes: true }).catch((error: unknown) => {
      throw new BuilderError("ARCHIVE_INVALID", `cannot read directory "${relDir || "."}" of the build context: ${describeError(error)}`, { cause: error });
    });
    // Node happens to return sorted names today; sorting here makes the order ours (code units, never locale-dependent).
    return entries.sort((left, right) => (left.name < right.name ? -1 : left.name > right.name ? 1 : 0));
  }

  #canSkipDirectory(relDir: string): boolean {
    if (this.#filter.canSkipDirectory) return this.#filter.canSkipDirectory(relDir);
    return !this.#hasExceptions;
  }

  *#flushPendingDirectories(): Generator<Buffer> {
    for (const relDir of this.#pendingDirectories) yield this.#directoryHeader(relDir);
    this.#pendingDirectories.length = 0;
  }

  #directoryHeader(relDir: string): Buffer {
    this.#count(relDir, 0);
    return encodeHeader({ name: `${relDir}/`, type: "directory", mode: DIRECTORY_MODE, size: 0, mtime: FIXED_MTIME });
  }

  /**
   * Synchronous on purpose: each async fs call is a thread-pool round trip, which made packing many small
   * files several times slower than GNU tar. Each call reads at most one 512 KiB chunk, and the event loop
   * runs whenever the output buffer is full.
   */
  *#file(relPath: string): Generator<Buffer> {
    let fd: number;
    try {
      fd = openSync(this.#absolute(relPath), OPEN_FLAGS);
    } catch (error) {
      if (errorCode(error) === "ELOOP") return;
      throw new BuilderError("ARCHIVE_INVALID", `cannot read "${relPath}" in the build context: ${describeError(error)}`, { cause: error });
    }
    try {
      const stats = fstatSync(fd);
      if (!stats.isFile()) return;
      const size = stats.size;
      this.#count(relPath, size);
      yield* this.#flushPendingDirectories();
      const mode = (stats.mode & 0o111) !== 0 ? EXECUTABLE_MODE : FILE_MODE;
      const header = encodeHeader(fileHeader(relPath, mode, size));
      // Header, content and padding share buffers so that a small file costs a single chunk.
      let chunk = Buffer.allocUnsafe(Math.min(header.length + paddedSize(size), CHUNK_SIZE));
      header.copy(chunk);
      let chunkUsed = header.length;
      let position = 0;
      while (position < size) {
        if (chunkUsed === chunk.length) {
          yield chunk;
          chunk = Buffer.allocUnsafe(Math.min(paddedSize(size - position), CHUNK_SIZE));
          chunkUsed = 0;
        }
        const bytesRead = readSync(fd, chunk, chunkUsed, Math.min(chunk.length - chunkUsed, size - position), position);
        if (bytesRead === 0) {
          throw new BuilderError("ARCHIVE_INVALID", `"${relPath}" shrank while the build context was being packed`);
        }
        chunkUsed += bytesRead;
        position += bytesRead;
      }
      // The rest of the last chunk is the block padding: zeros, not leftover memory.
      chunk.fill(0, chunkUsed);
      yield chunk;
    } finally {
      closeSync(fd);
    }
  }

  async *#symlink(relPath: string): AsyncGenerator<Buffer> {
    const absolutePath = this.#absolute(relPath);
    const target = await readlink(absolutePath);
    // Judged on the link text alone (never followed): absolute targets are meaningless in the image, and ".." may leave the context.
    if (path.isAbsolute(target)) return;
    const fromRoot = path.relative(this.#root, path.resolve(path.dirname(absolutePath), target));
    if (fromRoot === ".." || fromRoot.startsWith(`..${path.sep}`) || path.isAbsolute(fromRoot)) return;
    this.#count(relPath, 0);
    yield* this.#flushPendingDirectories();
    yield encodeHeader({ name: relPath, type: "symlink", mode: SYMLINK_MODE, size: 0, mtime: FIXED_MTIME, linkname: target });
  }

  #count(relPath: string, bytes: number): void {
    this.#entryCount += 1;
    this.#byteCount += bytes;
    if (this.#entryCount > this.#maxFiles) {
      throw new BuilderError("ARCHIVE_INVALID", `the build context has more than ${this.#maxFiles} files and directories (at "${relPath}"); exclude some with ignores or .dockerignore`);
    }
    if (this.#byteCount > this.#maxBytes) {
      throw new BuilderError("ARCHIVE_INVALID", `the build context is larger than ${formatBytes(this.#maxBytes)} (at "${relPath}"); exclude data, models or checkpoints with ignores or .dockerignore`);
    }
  }

  #absolute(relPath: string): string {
    return relPath === "" ? this.#root : path.join(this.#root, relPath);
  }
}

/** true when relPath exists as a regular file (not a symlink, under no symlinked directory) in root and is not ignored. */
export async function contextHasFile(root: string, filter: ContextFilter, relPath: string): Promise<boolean> {
  const normalized = normalizeRelativePath(relPath);
  if (normalized === null || filter.isIgnored(normalized)) return false;
  const segments = normalized.split("/");
  let current = path.resolve(root);
  for (const [index, segment] of segments.entries()) {
    current = path.join(current, segment);
    const stats = await lstat(current).catch(() => null);
    const isLast = index === segments.length - 1;
    if (!stats || (isLast ? !stats.isFile() : !stats.isDirectory())) return false;
  }
  return true;
}

function fileHeader(name: string, mode: number, size: number): EntryHeader {
  return { name, type: "file", mode, size, mtime: FIXED_MTIME };
}

function normalizeExtraFile(file: ExtraFile): NormalizedExtraFile {
  const name = normalizeRelativePath(file.name);
  if (name === null) throw new BuilderError("INTERNAL", `extra file name "${file.name}" must be a relative path inside the build context`);
  return { name, content: typeof file.content === "string" ? Buffer.from(file.content, "utf8") : file.content, mode: file.mode ?? FILE_MODE };
}

/** POSIX path relative to the context root without "./", or null when it is empty, absolute or leaves the root. */
function normalizeRelativePath(relPath: string): string | null {
  if (relPath === "" || relPath.startsWith("/")) return null;
  const normalized = path.posix.normalize(relPath).replace(/\/+$/, "");
  if (normalized === "." || normalized === ".." || normalized.startsWith("../")) return null;
  return normalized;
}

function positiveLimit(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!(value > 0)) throw new BuilderError("INTERNAL", `${name} must be a positive number`);
  return value;
}

function formatBytes(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

