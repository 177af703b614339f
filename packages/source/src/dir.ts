import { realpath, stat } from "node:fs/promises";
import path from "node:path";
import { BuilderError, isInside } from "@m1l0/config";
import type { FetchSourceOptions, FetchedSource } from "./types.js";

/** dir:///abs/path → that directory on the worker, used in place (no copy). */
export async function fetchDir(options: FetchSourceOptions): Promise<FetchedSource> {
  if (!options.policy.allowDir) {
    throw new BuilderError("SOURCE_NOT_ALLOWED", "dir sources are disabled on this worker; use a git URL or an s3 archive");
  }
  let dir = "";
  try {
    const url = new URL(options.source);
    if (url.protocol === "dir:" && !url.host) dir = decodeURIComponent(url.pathname);
  } catch {
    dir = "";
  }
  if (!dir.startsWith("/") || dir.includes("\0")) {
    throw new BuilderError("VALIDATION_FAILED", "dir sources must be dir:///absolute/path", {
      issues: [{ field: "source", message: "must be dir:///absolute/path" }],
    });
  }
  dir = path.resolve(dir);

  const roots = options.policy.dirRoots;
  const allowedRoots = roots === undefined ? undefined : await Promise.all(roots.map((root) => realpath(root).catch(() => path.resolve(root))));
  const outside = () =>
    new BuilderError("SOURCE_NOT_ALLOWED", `${dir} is outside the directories this worker may build from (${(roots ?? []).join(", ") || "none configured"})`);

  let real: string;
  try {
    real = await realpath(dir);
  } catch {
    // Say "not allowed" rather than "not found" for paths outside the roots: no probing of the worker's disk.
    if (allowedRoots && !allowedRoots.some((root) => isInside(root, dir))) throw outside();
    throw new BuilderError("SOURCE_NOT_FOUND", `directory ${dir} does not exist on the worker`);
  }
  if (allowedRoots && !allowedRoots.some((root) => isInside(root, real))) throw outside();
  if (!(await stat(real)).isDirectory()) throw new BuilderError("SOURCE_NOT_FOUND", `${dir} is not a directory`);
  options.onLog?.(`using directory ${dir}`);
  return { kind: "dir", root: real };
}
