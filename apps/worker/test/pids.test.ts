import { createContextFilter, packContext } from "@m1l0/context";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DockerImageBuilder } from "../src/docker.js";

/**
 * Real daemon, real cgroups: a RUN step that forks 200 processes (bounded, so a broken limit
 * cannot hurt the shared machine) against a per-build pids limit of 48.
 */
const BUSYBOX = process.env.BASE_IMAGE_BUSYBOX ?? "m1l0-local/busybox:latest";
const CGROUP_ROOT = "/sys/fs/cgroup";
const tags: string[] = [];
const dirs: string[] = [];

afterAll(async () => {
  for (const tag of tags) execFileSync("docker", ["rmi", "-f", tag], { stdio: "ignore" });
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function build(builder: DockerImageBuilder, run: string) {
  const root = await mkdtemp(path.join(tmpdir(), "m1l0-pids-"));
  dirs.push(root);
  const tag = `m1l0-pids-test:${randomUUID().slice(0, 8)}`;
  tags.push(tag);
  const lines: string[] = [];
  const context = packContext(root, {
    filter: await createContextFilter(root, []),
    extraFiles: [{ name: "Dockerfile", content: `FROM ${BUSYBOX}\nRUN ${run}\n` }],
  });
  const result = await builder.build({ context, tag, dockerfile: "Dockerfile", networkMode: "none", onLine: (line) => lines.push(line) });
  return { ...result, lines };
}

/** cgroups this process created that still exist, in any hierarchy */
async function leftoverCgroups(): Promise<string[]> {
  const found: string[] = [];
  for (const controller of await readdir(CGROUP_ROOT)) {
    const entries = await readdir(path.join(CGROUP_ROOT, controller)).catch(() => [] as string[]);
    found.push(...entries.filter((name) => name.startsWith(`m1l0-build-${process.pid}-`)).map((name) => `${controller}/${name}`));
  }
  return found;
}

const FORK_200 = "i=0; while [ $i -lt 200 ]; do sleep 2 & i=$((i+1)); done; echo spawned $i; wait";

describe("per-build pids limit (BUILD_PIDS_LIMIT)", () => {
  const limited = new DockerImageBuilder({ pidsLimit: 48 });

  it("fails a forking build with PIDS_LIMIT_EXCEEDED, keeps the daemon healthy and leaves no cgroup behind", async () => {
    const failure = await build(limited, FORK_200).then(
      () => null,
      (error: unknown) => error,
    );
    expect(failure).toMatchObject({ name: "BuilderError", code: "PIDS_LIMIT_EXCEEDED", retryable: false });
    expect((failure as Error).message).toContain("limit of 48 processes (the worker's BUILD_PIDS_LIMIT)");
    await expect(limited.ping()).resolves.toBeUndefined();
    expect(await leftoverCgroups()).toEqual([]);
  });

  it("still runs a normal build (a few processes) under the same limit", async () => {
    const result = await build(limited, "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait; echo done-ok");
    expect(result.imageId).toMatch(/^sha256:/);
    expect(result.lines).toContain("done-ok");
    expect(await leftoverCgroups()).toEqual([]);
  });

  it("is what stops the fork: without a limit the same step succeeds", async () => {
    const result = await build(new DockerImageBuilder({ pidsLimit: 0 }), FORK_200);
    expect(result.lines).toContain("spawned 200");
  });

  it("is not something ulimit nproc could do: root in a RUN step ignores RLIMIT_NPROC", () => {
    // The reason for the cgroup: the build API's ulimits are no substitute (verified, not assumed).
    const root = execFileSync("mktemp", ["-d"]).toString().trim();
    dirs.push(root);
    const tag = `m1l0-pids-test:nproc-${randomUUID().slice(0, 8)}`;
    tags.push(tag);
    execFileSync("sh", ["-c", `printf 'FROM ${BUSYBOX}\\nRUN ${FORK_200}\\n' > ${root}/Dockerfile`]);
    const output = execFileSync("docker", ["build", "--no-cache", "--network", "none", "--ulimit", "nproc=48:48", "-t", tag, root], {
      env: { ...process.env, DOCKER_BUILDKIT: "0" },
      stdio: ["ignore", "pipe", "pipe"],
    }).toString();
    expect(output).toContain("spawned 200");
  });
});

describe("the sandboxed run (the import check) under the same BUILD_PIDS_LIMIT", () => {
  it("cannot fork past the limit, and runs normally below it", async () => {
    const limited = new DockerImageBuilder({ pidsLimit: 48 });
    const forked = await limited.run({ image: BUSYBOX, command: ["sh", "-c", FORK_200], timeoutMs: 60_000 });
    expect(forked.timedOut).toBe(false);
    expect(forked.stdout).not.toContain("spawned 200");
    expect(forked.stderr).toMatch(/can't fork|Resource temporarily unavailable/);
    const free = await new DockerImageBuilder({ pidsLimit: 0 }).run({ image: BUSYBOX, command: ["sh", "-c", FORK_200], timeoutMs: 60_000 });
    expect(free.stdout).toContain("spawned 200");
  });
});
