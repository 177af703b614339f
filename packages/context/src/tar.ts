/**
 * Minimal ustar + pax header encoder. Encoding headers ourselves lets packContext be a single pull-driven
 * generator (Readable.from), so backpressure also covers header-only entries (directories, symlinks),
 * which tar-stream's pack pushes without waiting for the reader.
 */

export const BLOCK_SIZE = 512;
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK_SIZE);

export type EntryType = "file" | "directory" | "symlink";

export interface EntryHeader {
  /** POSIX path; directories end with "/" */
  name: string;
  type: EntryType;
  mode: number;
  size: number;
  mtime: Date;
  linkname?: string;
}

const TYPE_FLAGS: Record<EntryType | "pax", string> = { file: "0", symlink: "2", directory: "5", pax: "x" };
const NAME_FIELD = 100;
const PREFIX_FIELD = 155;
const LINKNAME_FIELD = 100;
/** Largest size the 11 octal digits of the ustar size field can hold. */
const MAX_OCTAL_SIZE = 8 ** 11 - 1;

/** Header block(s) for one entry: a pax extended header first when the path or link target does not fit ustar. */
export function encodeHeader(header: EntryHeader): Buffer {
  const split = splitUstarName(header.name);
  const linkname = header.linkname ?? "";
  const linkFits = isAscii(linkname) && linkname.length <= LINKNAME_FIELD;
  if (split && linkFits) return encodeUstar(header, split.name, split.prefix, linkname);

  const records = [...(split ? [] : [paxRecord("path", header.name)]), ...(linkFits ? [] : [paxRecord("linkpath", linkname)])].join("");
  const body = Buffer.from(records, "utf8");
  const paxHeader = encodeUstar({ name: "PaxHeader", type: "file", mode: 0o644, size: body.length, mtime: header.mtime }, "PaxHeader", "", "", TYPE_FLAGS.pax);
  // Readers that ignore pax still get a harmless, ASCII-only name and link target.
  const fallbackName = asciiFallback(header.name).slice(0, NAME_FIELD);
  const fallbackLink = asciiFallback(linkname).slice(0, LINKNAME_FIELD);
  return Buffer.concat([paxHeader, body, padding(body.length), encodeUstar(header, fallbackName, "", fallbackLink)]);
}

/**
 * Writes a plain ustar header (no pax needed) into `target` at `offset` and returns true, or
 * returns false when the entry needs pax (use encodeHeader then). Saves an allocation per entry.
 */
export function encodeUstarHeaderInto(header: EntryHeader, target: Buffer, offset: number): boolean {
  const split = splitUstarName(header.name);
  const linkname = header.linkname ?? "";
  if (!split || !isAscii(linkname) || linkname.length > LINKNAME_FIELD || header.size > MAX_OCTAL_SIZE) return false;
  // Every field but name, prefix, link name, size and checksum comes from a per-(type, mode, mtime) template.
  const key = `${header.type}:${header.mode}:${header.mtime.getTime()}`;
  let template = templates.get(key);
  if (!template) {
    template = Buffer.alloc(BLOCK_SIZE);
    writeUstar(template, { ...header, size: 0 }, "", "", "", TYPE_FLAGS[header.type]);
    template.fill(0, 124, 136); // size: written per entry
    template.fill(0x20, 148, 156); // checksum: computed per entry
    if (templates.size < 64) templates.set(key, template);
  }
  template.copy(target, offset);
  target.write(split.name, offset, NAME_FIELD, "latin1");
  if (split.prefix) target.write(split.prefix, offset + 345, PREFIX_FIELD, "latin1");
  if (linkname) target.write(linkname, offset + 157, LINKNAME_FIELD, "latin1");
  target.write(header.size.toString(8).padStart(11, "0"), offset + 124, 11, "latin1");
  let checksum = 0;
  for (let index = offset; index < offset + BLOCK_SIZE; index++) checksum += target[index]!;
  target.write(`${checksum.toString(8).padStart(6, "0")}\u0000 `, offset + 148, 8, "latin1");
  return true;
}

const templates = new Map<string, Buffer>();

/** Zero bytes that round `size` up to a whole block. */
export function padding(size: number): Buffer {
  const remainder = size % BLOCK_SIZE;
  return remainder === 0 ? Buffer.alloc(0) : Buffer.alloc(BLOCK_SIZE - remainder);
}

export function paddedSize(size: number): number {
  return Math.ceil(size / BLOCK_SIZE) * BLOCK_SIZE;
}

function encodeUstar(header: EntryHeader, name: string, prefix: string, linkname: string, typeFlag: string = TYPE_FLAGS[header.type]): Buffer {
  const block = Buffer.alloc(BLOCK_SIZE);
  writeUstar(block, header, name, prefix, linkname, typeFlag);
  return block;
}

function writeUstar(block: Buffer, header: EntryHeader, name: string, prefix: string, linkname: string, typeFlag: string): void {
  block.fill(0);
  block.write(name, 0, NAME_FIELD, "latin1");
  writeOctal(block, 100, 8, header.mode & 0o7777);
  writeOctal(block, 108, 8, 0); // uid
  writeOctal(block, 116, 8, 0); // gid
  if (header.size > MAX_OCTAL_SIZE) writeBase256(block, 124, 12, header.size);
  else writeOctal(block, 124, 12, header.size);
  writeOctal(block, 136, 12, Math.floor(header.mtime.getTime() / 1000));
  block.write(typeFlag, 156, 1, "latin1");
  block.write(linkname, 157, LINKNAME_FIELD, "latin1");
  block.write("ustar\u000000", 257, 8, "latin1");
  // uname and gname (265, 297) stay empty
  writeOctal(block, 329, 8, 0); // devmajor
  writeOctal(block, 337, 8, 0); // devminor
  block.write(prefix, 345, PREFIX_FIELD, "latin1");
  // The checksum is computed with its own field read as spaces.
  block.fill(0x20, 148, 156);
  let checksum = 0;
  for (const byte of block) checksum += byte;
  block.write(`${checksum.toString(8).padStart(6, "0")}\u0000 `, 148, 8, "latin1");
}

/** ustar stores long paths as prefix + "/" + name; null when the path needs pax. */
function splitUstarName(path: string): { name: string; prefix: string } | null {
  if (!isAscii(path)) return null;
  if (path.length <= NAME_FIELD) return { name: path, prefix: "" };
  // Earliest slash that leaves at most 100 characters after it, so the prefix is as short as possible.
  const slash = path.indexOf("/", path.length - NAME_FIELD - 1);
  if (slash === -1 || slash > PREFIX_FIELD || slash === path.length - 1) return null;
  return { prefix: path.slice(0, slash), name: path.slice(slash + 1) };
}

function paxRecord(key: string, value: string): string {
  // The record's length counts its own decimal digits.
  const bodyLength = Buffer.byteLength(` ${key}=${value}\n`, "utf8");
  let length = bodyLength + String(bodyLength).length;
  if (String(length).length > String(bodyLength).length) length = bodyLength + String(length).length;
  return `${length} ${key}=${value}\n`;
}

function writeOctal(block: Buffer, offset: number, width: number, value: number): void {
  block.write(`${value.toString(8).padStart(width - 1, "0")}\u0000`, offset, width, "latin1");
}

/** GNU base-256 number (understood by Go's archive/tar, GNU tar and tar-stream) for sizes of 8 GiB and more. */
function writeBase256(block: Buffer, offset: number, width: number, value: number): void {
  let remaining = value;
  for (let index = offset + width - 1; index > offset; index--) {
    block[index] = remaining % 256;
    remaining = Math.floor(remaining / 256);
  }
  block[offset] = 0x80;
}

function isAscii(text: string): boolean {
  return /^[\x01-\x7f]*$/.test(text);
}

function asciiFallback(text: string): string {
  return text.replace(/[^\x01-\x7f]/g, "_");
}
