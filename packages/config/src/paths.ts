import path from "node:path";

/**
 * Whether `target` is `root` itself or lies beneath it, judged on the paths as given (resolve
 * links first where they matter). "..foo" is a name inside root; ".." and "../x" are not.
 */
export function isInside(root: string, target: string): boolean {
  const rel = path.relative(root, target);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** A size for messages and logs: "999 bytes", "64.0 KiB", "10.0 MiB", "2.00 GiB". */
export function formatBytes(bytes: number): string {
  if (bytes < KiB) return `${bytes} bytes`;
  if (bytes < MiB) return `${(bytes / KiB).toFixed(1)} KiB`;
  if (bytes < GiB) return `${(bytes / MiB).toFixed(1)} MiB`;
  return `${(bytes / GiB).toFixed(2)} GiB`;
}
