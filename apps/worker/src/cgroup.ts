import { BuilderError } from "@m1l0/config";
import { randomBytes } from "node:crypto";
import { access, mkdir, readdir, readFile, rmdir, writeFile } from "node:fs/promises";
import path from "node:path";

/**
 * A per-build cgroup that caps the number of processes of every RUN step.
 *
 * Docker's build API has no pids option, and `ulimits nproc` does not help: RLIMIT_NPROC is not
 * enforced for uid 0 (RUN steps run as root by default) and counts per user across the host anyway.
 * The classic builder does honour `cgroupparent`: each RUN container's cgroup is created below it,
 * and the pids controller is hierarchical, so a `pids.max` on a parent the worker creates caps
 * the whole build. Works with the daemon's `cgroupfs` driver on cgroup v1 and v2, when the worker
 * sees the same /sys/fs/cgroup as the daemon (same host).
 */
export interface BuildCgroup {
  /** value for the build API's `cgroupparent` */
  readonly parent: string;
  readonly limit: number;
  /** true when the build's processes reached the limit (a fork was refused) */
  limitReached(): Promise<boolean>;
  /** removes the cgroup (and the per-controller directories the daemon created for it) */
  release(): Promise<void>;
}

export interface CgroupOptions {
  /** the cgroup filesystem mount, /sys/fs/cgroup */
  root: string;
  limit: number;
  /** prefix of created cgroup names */
  prefix?: string;
}

export async function createBuildCgroup(options: CgroupOptions): Promise<BuildCgroup> {
  const name = `${options.prefix ?? "m1l0-build"}-${process.pid}-${randomBytes(6).toString("hex")}`;
  const unified = await exists(path.join(options.root, "cgroup.controllers"));
  const pidsDir = unified ? path.join(options.root, name) : path.join(options.root, "pids", name);
  try {
    if (unified) await enablePidsController(options.root);
    else if (!(await exists(path.join(options.root, "pids")))) throw new Error(`no pids controller is mounted at ${path.join(options.root, "pids")}`);
    await mkdir(pidsDir);
    await writeFile(path.join(pidsDir, "pids.max"), String(options.limit));
  } catch (cause) {
    await rmdir(pidsDir).catch(() => undefined);
    throw new BuilderError(
      "INTERNAL",
      `cannot create the build's pids cgroup under ${options.root} (${cause instanceof Error ? cause.message : String(cause)}); the worker must run as root on the daemon's host, or BUILD_PIDS_LIMIT=0 disables the limit`,
      { cause },
    );
  }
  return {
    parent: `/${name}`,
    limit: options.limit,
    limitReached: async () => {
      // pids.peak (Linux ≥ 6.1) is the most direct; pids.events counts refused forks here on cgroup v2
      const peak = Number((await readFile(path.join(pidsDir, "pids.peak"), "utf8").catch(() => "")).trim());
      if (Number.isFinite(peak) && peak >= options.limit) return true;
      const events = await readFile(path.join(pidsDir, "pids.events"), "utf8").catch(() => "");
      return /^max\s+[1-9]/m.test(events);
    },
    release: () => release(options.root, name, unified),
  };
}

async function enablePidsController(root: string): Promise<void> {
  const control = path.join(root, "cgroup.subtree_control");
  const enabled = await readFile(control, "utf8");
  if (!/\bpids\b/.test(enabled)) await writeFile(control, "+pids");
}

/**
 * The daemon removes each RUN container's own cgroup when it removes the container; the parent
 * directories it created in every v1 hierarchy (cpu, memory, …) and ours stay until we remove them.
 * A container still being torn down keeps its directory busy for a moment: retry briefly.
 */
async function release(root: string, name: string, unified: boolean): Promise<void> {
  const dirs = unified
    ? [path.join(root, name)]
    : (await readdir(root).catch(() => [] as string[])).map((controller) => path.join(root, controller, name));
  for (const dir of dirs) {
    for (let attempt = 0; ; attempt++) {
      try {
        await removeTree(dir);
        break;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "ENOENT" || code === "ENOTDIR") break;
        if (attempt >= 50) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }
}

/** cgroup directories are removed with rmdir, children first (their files are virtual). */
async function removeTree(dir: string): Promise<void> {
  const entries = await readdir(dir, { withFileTypes: true });
  for (const entry of entries) if (entry.isDirectory()) await removeTree(path.join(dir, entry.name));
  await rmdir(dir);
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}
