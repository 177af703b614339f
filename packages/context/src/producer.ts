import { BuilderError, formatBytes, isBuilderError, isInside } from "@m1l0/config";
import { closeSync, constants, fstatSync, openSync, readdirSync, readlinkSync, readSync, type Dirent } from "node:fs";
import path from "node:path";
import { describeError, errorCode, type ContextFilter } from "./filter.js";
import { BLOCK_SIZE, END_OF_ARCHIVE, encodeHeader, encodeUstarHeaderInto, padding, paddedSize, type EntryHeader } from "./tar.js";

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
// O_NOFOLLOW: a file swapped for a symlink after readdir must not be read through; O_NONBLOCK: nor may a FIFO block us.
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

interface NormalizedExtraFile {
  name: string;
  content: Buffer;
  mode: number;
}

interface Frame {
  relDir: string;
  entries: Dirent[] | null;
  index: number;
  /** an ignored directory we descended into for `!` exceptions (its header is written only if needed) */
  pending: boolean;
}

interface OpenFile {
  fd: number;
  relPath: string;
  size: number;
  position: number;
}

const NO_CHUNK = Buffer.alloc(0);

/**
 * Walks the filtered tree and writes the tar into buffers it is given: headers, file content read
 * straight into the buffer, padding. Knows nothing of streams; the stream around it decides whose
 * buffers it fills (fresh ones per chunk, or a reused pool when it writes with callbacks).
 *
 * The file system is used synchronously on purpose: each async fs call is a thread-pool round trip,
 * which made packing many small files several times slower than GNU tar. One `fill` does at most
 * one buffer's worth of reads (plus a directory listing).
 */
export class TarProducer {
  readonly #root: string;
  readonly #filter: ContextFilter;
  readonly #extraFiles: readonly NormalizedExtraFile[];
  readonly #replacedPaths: ReadonlySet<string>;
  readonly #maxFiles: number;
  readonly #maxBytes: number;
  readonly #hasExceptions: boolean;
  /** Ignored directories we descended into (for `!` exceptions); their headers are written only once something inside is included. */
  readonly #pendingDirectories: string[] = [];
  readonly #stack: Frame[] = [];
  /** bytes produced but not yet copied into a chunk (headers that did not fit, extra files) */
  readonly #queue: Buffer[] = [];
  #file: OpenFile | null = null;
  #padding = 0;
  #extraIndex = 0;
  #endWritten = false;
  #entryCount = 0;
  #byteCount = 0;
  #chunk: Buffer = NO_CHUNK;
  #used = 0;

  constructor(root: string, options: PackOptions) {
    const extraFiles = (options.extraFiles ?? []).map(normalizeExtraFile);
    this.#root = path.resolve(root);
    this.#filter = options.filter;
    this.#extraFiles = extraFiles;
    this.#replacedPaths = new Set(extraFiles.map((file) => file.name));
    this.#maxFiles = positiveLimit(options.maxFiles, DEFAULT_MAX_FILES, "maxFiles");
    this.#maxBytes = positiveLimit(options.maxBytes, DEFAULT_MAX_BYTES, "maxBytes");
    this.#hasExceptions = options.filter.patterns.some((pattern) => pattern.trim().startsWith("!"));
    this.#stack.push({ relDir: "", entries: null, index: 0, pending: false });
  }

  /**
   * Fills `chunk` from its start with the next bytes of the archive (all of it unless the archive
   * ends first). `done` is true once the archive is complete. Throws a BuilderError
   * ("ARCHIVE_INVALID") for an unreadable tree or exceeded caps.
   */
  fill(chunk: Buffer): { used: number; done: boolean } {
    this.#chunk = chunk;
    this.#used = 0;
    let done = false;
    try {
      while (this.#used < chunk.length && !(done = this.#step()));
    } catch (error) {
      this.close();
      throw isBuilderError(error) ? error : new BuilderError("ARCHIVE_INVALID", `cannot pack the build context: ${describeError(error)}`, { cause: error });
    }
    this.#chunk = NO_CHUNK; // the caller owns the buffer again
    return { used: this.#used, done };
  }

  /** Closes the file being read, if any; call when the archive is abandoned. */
  close(): void {
    if (this.#file) {
      closeSync(this.#file.fd);
      this.#file = null;
    }
  }

  /** Does one unit of work (copies queued bytes, reads file content, or visits one entry); true when the archive is complete. */
  #step(): boolean {
    const space = this.#chunk.length - this.#used;
    const queued = this.#queue[0];
    if (queued) {
      const length = Math.min(space, queued.length);
      queued.copy(this.#chunk, this.#used, 0, length);
      this.#used += length;
      if (length === queued.length) this.#queue.shift();
      else this.#queue[0] = queued.subarray(length);
      return false;
    }
    const file = this.#file;
    if (file) {
      const bytesRead = readSync(file.fd, this.#chunk, this.#used, Math.min(space, file.size - file.position), file.position);
      if (bytesRead === 0) throw new BuilderError("ARCHIVE_INVALID", `"${file.relPath}" shrank while the build context was being packed`);
      this.#used += bytesRead;
      file.position += bytesRead;
      if (file.position === file.size) {
        this.close();
        this.#padding = paddedSize(file.size) - file.size;
      }
      return false;
    }
    if (this.#padding > 0) {
      const length = Math.min(space, this.#padding);
      this.#chunk.fill(0, this.#used, this.#used + length);
      this.#used += length;
      this.#padding -= length;
      return false;
    }
    const frame = this.#stack.at(-1);
    if (frame) {
      this.#visit(frame);
      return false;
    }
    const extra = this.#extraFiles[this.#extraIndex];
    if (extra) {
      this.#extraIndex += 1;
      this.#count(extra.name, extra.content.length);
      this.#header(fileHeader(extra.name, extra.mode, extra.content.length));
      this.#queue.push(extra.content, padding(extra.content.length));
      return false;
    }
    if (!this.#endWritten) {
      this.#endWritten = true;
      this.#queue.push(END_OF_ARCHIVE);
      return false;
    }
    return true;
  }

  #visit(frame: Frame): void {
    frame.entries ??= this.#readDirectory(frame.relDir);
    const entry = frame.entries[frame.index++];
    if (!entry) {
      this.#stack.pop();
      if (frame.pending && this.#pendingDirectories.at(-1) === frame.relDir) this.#pendingDirectories.pop();
      return;
    }
    const relPath = frame.relDir === "" ? entry.name : `${frame.relDir}/${entry.name}`;
    if (this.#replacedPaths.has(relPath)) return;
    const ignored = this.#filter.isIgnored(relPath);
    if (entry.isDirectory()) {
      if (!ignored) {
        this.#flushPendingDirectories();
        this.#directoryHeader(relPath);
        this.#stack.push({ relDir: relPath, entries: null, index: 0, pending: false });
      } else if (!this.#canSkipDirectory(relPath)) {
        this.#pendingDirectories.push(relPath);
        this.#stack.push({ relDir: relPath, entries: null, index: 0, pending: true });
      }
    } else if (ignored) {
      return;
    } else if (entry.isFile()) {
      this.#openFile(relPath);
    } else if (entry.isSymbolicLink()) {
      this.#symlink(relPath);
    }
    // Sockets, FIFOs and devices have no place in a build context.
  }

  #readDirectory(relDir: string): Dirent[] {
    let entries: Dirent[];
    try {
      entries = readdirSync(this.#absolute(relDir), { withFileTypes: true });
    } catch (error) {
      throw new BuilderError("ARCHIVE_INVALID", `cannot read directory "${relDir || "."}" of the build context: ${describeError(error)}`, { cause: error });
    }
    // Sorting here makes the order ours (code units, never locale-dependent).
    return entries.sort((left, right) => (left.name < right.name ? -1 : left.name > right.name ? 1 : 0));
  }

  #canSkipDirectory(relDir: string): boolean {
    if (this.#filter.canSkipDirectory) return this.#filter.canSkipDirectory(relDir);
    return !this.#hasExceptions;
  }

  #flushPendingDirectories(): void {
    for (const relDir of this.#pendingDirectories) this.#directoryHeader(relDir);
    this.#pendingDirectories.length = 0;
  }

  #directoryHeader(relDir: string): void {
    this.#count(relDir, 0);
    this.#header({ name: `${relDir}/`, type: "directory", mode: DIRECTORY_MODE, size: 0, mtime: FIXED_MTIME });
  }

  /** Writes a header straight into the chunk when it fits (the common case), else queues it. */
  #header(header: EntryHeader): void {
    if (this.#queue.length === 0 && this.#chunk.length - this.#used >= BLOCK_SIZE && encodeUstarHeaderInto(header, this.#chunk, this.#used)) {
      this.#used += BLOCK_SIZE;
      return;
    }
    this.#queue.push(encodeHeader(header));
  }

  #openFile(relPath: string): void {
    let fd: number;
    try {
      fd = openSync(this.#absolute(relPath), OPEN_FLAGS);
    } catch (error) {
      if (errorCode(error) === "ELOOP") return;
      throw new BuilderError("ARCHIVE_INVALID", `cannot read "${relPath}" in the build context: ${describeError(error)}`, { cause: error });
    }
    let keep = false;
    try {
      const stats = fstatSync(fd);
      if (!stats.isFile()) return;
      const size = stats.size;
      this.#count(relPath, size);
      this.#flushPendingDirectories();
      this.#header(fileHeader(relPath, (stats.mode & 0o111) !== 0 ? EXECUTABLE_MODE : FILE_MODE, size));
      if (size > 0) {
        this.#file = { fd, relPath, size, position: 0 };
        keep = true;
      }
    } finally {
      if (!keep) closeSync(fd);
    }
  }

  #symlink(relPath: string): void {
    const absolutePath = this.#absolute(relPath);
    const target = readlinkSync(absolutePath);
    // Judged on the link text alone (never followed): absolute targets are meaningless in the image, and ".." may leave the context.
    if (path.isAbsolute(target)) return;
    if (!isInside(this.#root, path.resolve(path.dirname(absolutePath), target))) return;
    this.#count(relPath, 0);
    this.#flushPendingDirectories();
    this.#header({ name: relPath, type: "symlink", mode: SYMLINK_MODE, size: 0, mtime: FIXED_MTIME, linkname: target });
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
    // relPath is made of names readdir returned: plain concatenation is exact (no normalisation needed)
    return relPath === "" ? this.#root : `${this.#root}/${relPath}`;
  }
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
export function normalizeRelativePath(relPath: string): string | null {
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


