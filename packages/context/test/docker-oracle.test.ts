import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createContextFilter, packContext } from "../src/index.js";
import { collect, makeTempDir, namesOf, readTar, removeTempDirs, writeTree } from "./helpers.js";

/**
 * Oracle: the real docker CLI (legacy builder, which applies .dockerignore on the client with
 * moby/patternmatcher) receives a context and a .dockerignore; the image's files are what it sent.
 * Our filter must select exactly the same files.
 */

afterEach(removeTempDirs);

const IGNORE = [
  "# comment",
  "*.log",
  "!keep*.log",
  "build/**",
  "!build/dist/*.js",
  "**/*.pyc",
  "/cache",
  "./tmp/",
  "data[0-9]",
  "set[^a-c]",
  "odd[!x]",
  "lit\\*",
  "q?z",
  "deep/**/secret*",
  "mid**.cfg",
  "docs",
  "!docs/public",
  "docs/public/draft*",
  "  spaced  ",
  "x//y/../z",
].join("\n");

const FILES = [
  "main.py", "app.log", "keep1.log", "nested/app.log", "build/a.txt", "build/dist/x.js", "build/dist/x.map",
  "m.pyc", "src/m.pyc", "src/deep/n.pyc", "src/ok.py", "cache/c.bin", "src/cache/c.bin", "tmp/t", "data1/f", "data1",
  "dataX/f", "setd", "seta", "set/z", "odd!", "oddx", "oddy", "lit*", "litx", "qaz", "q/z", "deep/secret.txt",
  "deep/a/b/secret-2", "deep/a/public", "mid.cfg", "midway.cfg", "mid/x.cfg", "mid/sub/dir.cfg/inner", "docs/guide.md", "docs/public/index.md",
  "docs/public/draft1.md", "spaced", "x/z/inner", "x/y",
];

function docker(args: string[], input?: Buffer): Buffer {
  return execFileSync("docker", args, { env: { ...process.env, DOCKER_BUILDKIT: "0" }, maxBuffer: 64 * 1024 * 1024, ...(input ? { input } : {}), stdio: ["pipe", "pipe", "pipe"] });
}

describe(".dockerignore parity with the docker CLI", () => {
  it("sends exactly the files docker build sends", async () => {
    const root = await makeTempDir();
    const dockerfileDir = await makeTempDir();
    const tree: Record<string, string | null> = { ".dockerignore": `${IGNORE}\n` };
    for (const file of FILES) if (file !== "data1") tree[file] = `content of ${file}`;
    // "data1" is both a directory (data1/f) and listed above to show it is matched as a directory
    await writeTree(root, tree);
    const dockerfile = path.join(dockerfileDir, "Dockerfile");
    await writeFile(dockerfile, "FROM scratch\nCOPY . /ctx/\n");

    const tag = `m1l0-oracle-${randomUUID().slice(0, 8)}`;
    let container = "";
    try {
      docker(["build", "-q", "--network", "none", "-f", dockerfile, "-t", tag, root]);
      container = docker(["create", tag, "none"]).toString().trim();
      const exported = docker(["export", container]);
      const listing = execFileSync("tar", ["-t"], { input: exported, maxBuffer: 64 * 1024 * 1024 }).toString().split("\n");
      const dockerFiles = listing
        .filter((name) => name.startsWith("ctx/") && !name.endsWith("/"))
        .map((name) => name.slice("ctx/".length))
        // the CLI adds a Dockerfile from outside the context under a random name
        .filter((name) => !name.startsWith(".dockerfile."))
        .sort();

      const filter = await createContextFilter(root, []);
      const ours = namesOf(await readTar(await collect(packContext(root, { filter })))).filter((name) => !name.endsWith("/"));

      expect(ours).toEqual(dockerFiles);
      // the fixture is meaningful: both kept and dropped files, and exceptions at work
      expect(dockerFiles).toContain("keep1.log");
      expect(dockerFiles).toContain("build/dist/x.js");
      expect(dockerFiles).not.toContain("build/dist/x.map");
      expect(dockerFiles.length).toBeGreaterThan(10);
      expect(dockerFiles.length).toBeLessThan(FILES.length);
    } finally {
      if (container) execFileSync("docker", ["rm", "-f", container], { stdio: "ignore" });
      execFileSync("docker", ["rmi", "-f", tag], { stdio: "ignore" });
    }
  });
});
