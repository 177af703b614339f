import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { fetchSource, type FetchSourceOptions, type GitCredential } from "../src/index.js";
import { GIT_FIXTURES_DIR, GIT_SERVER_URL, PRIVATE_TOKEN, PRIVATE_USERNAME, git, listTree, lsRemote, rejection, scratch, uniqueName } from "./helpers.js";

const serverHost = new URL(GIT_SERVER_URL).host;
const PUBLIC = `${GIT_SERVER_URL}/examples/mnist.git`;
const PRIVATE = `${GIT_SERVER_URL}/private/mnist.git`;
// the local git server is on loopback: allowlisted explicitly, as an operator would for an internal host
const policy = { allowHttp: true, allowDir: false, hostAllowlist: ["127.0.0.0/8", "::1"] };

/** A repository made for these tests: history on main, an annotated tag, a side branch, a subdirectory, a symlink out. */
const fixture = {
  group: uniqueName("test-source"),
  url: "",
  first: "", // commit 1 on main: a.txt = "one"
  tagged: "", // commit 2 on main, annotated tag v2: a.txt = "two"
  feature: "", // only on branch feature: f.txt
  head: "", // commit 3, tip of main: a.txt = "three"
};

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

beforeAll(async () => {
  const bare = path.join(GIT_FIXTURES_DIR, fixture.group, "repo.git");
  const work = await mkdtemp(path.join(os.tmpdir(), "m1l0-git-fixture-"));
  try {
    git(work, "init", "-q", "-b", "main");
    await writeFile(path.join(work, "a.txt"), "one\n");
    await mkdir(path.join(work, "sub", "inner"), { recursive: true });
    await writeFile(path.join(work, "sub", "inner", "x.txt"), "inner\n");
    await writeFile(path.join(work, "plain.txt"), "not a directory\n");
    await symlink("/etc", path.join(work, "escape"));
    git(work, "add", "-A");
    git(work, "commit", "-q", "-m", "one");
    fixture.first = git(work, "rev-parse", "HEAD");
    await writeFile(path.join(work, "a.txt"), "two\n");
    git(work, "commit", "-q", "-am", "two");
    git(work, "tag", "-a", "v2", "-m", "annotated tag");
    fixture.tagged = git(work, "rev-parse", "HEAD");
    git(work, "checkout", "-q", "-b", "feature");
    await writeFile(path.join(work, "f.txt"), "feature\n");
    git(work, "add", "f.txt");
    git(work, "commit", "-q", "-m", "feature");
    fixture.feature = git(work, "rev-parse", "HEAD");
    git(work, "checkout", "-q", "main");
    await writeFile(path.join(work, "a.txt"), "three\n");
    git(work, "commit", "-q", "-am", "three");
    fixture.head = git(work, "rev-parse", "HEAD");
    await mkdir(path.dirname(bare), { recursive: true });
    git(work, "init", "-q", "--bare", bare);
    git(work, "push", "-q", bare, "main", "feature", "--tags");
    git(bare, "symbolic-ref", "HEAD", "refs/heads/main");
    fixture.url = `${GIT_SERVER_URL}/${fixture.group}/repo.git`;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});

afterAll(async () => {
  await rm(path.join(GIT_FIXTURES_DIR, fixture.group), { recursive: true, force: true });
});

async function run(source: string, extra: Partial<FetchSourceOptions> = {}) {
  const area = await scratch();
  cleanups.push(area.cleanup);
  const logs: string[] = [];
  const promise = fetchSource({ source, workDir: area.workDir, policy, onLog: (line) => logs.push(line), ...extra });
  return { area, logs, promise };
}

describe("git sources", () => {
  it("clones the public repository at main, resolves the commit and drops .git", async () => {
    const { area, logs, promise } = await run(`${PUBLIC}#main`);
    const fetched = await promise;
    expect(fetched).toEqual({ kind: "git", root: area.workDir, commit: lsRemote(PUBLIC, "refs/heads/main"), ref: "main" });
    expect(await listTree(area.workDir)).toEqual([".dockerignore", "README.md", "data", "data/README.txt", "m1l0.yaml", "main.py", "model.py", "requirements.txt"]);
    expect(logs).toContain(`cloning ${PUBLIC} (ref main)`);
    expect(logs).toContain(`resolved commit ${fetched.commit} (main)`);
    // our own shallow fetch: the pack streamed to disk, then indexed, then checked out
    expect(logs.some((line) => /^received a pack of \d/.test(line))).toBe(true);
    expect(logs.some((line) => /^Indexing objects: (\d+)\/\1$/.test(line))).toBe(true);
    expect(logs.some((line) => /^Updating workdir: (\d+)\/\1$/.test(line))).toBe(true);
  });

  it("clones the default branch when no ref is given and reports its name", async () => {
    const { area, promise } = await run(fixture.url);
    const fetched = await promise;
    expect(fetched.ref).toBe("main");
    expect(fetched.commit).toBe(fixture.head);
    expect(await readFile(path.join(area.workDir, "a.txt"), "utf8")).toBe("three\n");
    expect(existsSync(path.join(area.workDir, "f.txt"))).toBe(false);
  });

  it("clones at a lightweight tag", async () => {
    const { area, promise } = await run(`${PUBLIC}#v1`);
    const fetched = await promise;
    expect(fetched.commit).toBe(lsRemote(PUBLIC, "refs/tags/v1"));
    expect(fetched.ref).toBe("v1");
    expect(existsSync(path.join(area.workDir, "main.py"))).toBe(true);
  });

  it("clones at an annotated tag and records the commit, not the tag object", async () => {
    const { area, promise } = await run(`${fixture.url}#v2`);
    const fetched = await promise;
    expect(fetched.commit).toBe(fixture.tagged);
    expect(await readFile(path.join(area.workDir, "a.txt"), "utf8")).toBe("two\n");
  });

  it("checks out an older commit of the default branch by full sha", async () => {
    const { area, promise } = await run(`${fixture.url}#${fixture.first}`);
    const fetched = await promise;
    expect(fetched).toMatchObject({ kind: "git", commit: fixture.first, ref: fixture.first });
    expect(await readFile(path.join(area.workDir, "a.txt"), "utf8")).toBe("one\n");
    expect(existsSync(path.join(area.workDir, ".git"))).toBe(false);
  });

  it("checks out a commit that is only on another branch", async () => {
    const { area, promise } = await run(`${fixture.url}#${fixture.feature}`);
    const fetched = await promise;
    expect(fetched.commit).toBe(fixture.feature);
    expect(await readFile(path.join(area.workDir, "f.txt"), "utf8")).toBe("feature\n");
    expect(await readFile(path.join(area.workDir, "a.txt"), "utf8")).toBe("two\n");
  });

  it("fails with SOURCE_NOT_FOUND for a commit sha the repository does not have, after trying the full history", async () => {
    const missing = "1234567890abcdef1234567890abcdef12345678";
    const { logs, promise } = await run(`${fixture.url}#${missing}`);
    const error = await rejection(promise);
    expect(error.code).toBe("SOURCE_NOT_FOUND");
    expect(error.message).toBe(`commit ${missing} not found in ${fixture.url}`);
    expect(logs.some((line) => line.includes("fetching all branches and tags"))).toBe(true);
  });

  it("builds from a subdirectory (ref:subdir)", async () => {
    const { area, promise } = await run(`${fixture.url}#main:sub/inner`);
    const fetched = await promise;
    expect(fetched.root).toBe(path.join(area.workDir, "sub", "inner"));
    expect(await listTree(fetched.root)).toEqual(["x.txt"]);
  });

  it("builds from a subdirectory of the default branch (#:subdir)", async () => {
    const { area, promise } = await run(`${PUBLIC}#:data`);
    const fetched = await promise;
    expect(fetched.root).toBe(path.join(area.workDir, "data"));
    expect(fetched.ref).toBe("main");
    expect(await readFile(path.join(fetched.root, "README.txt"), "utf8")).not.toBe("");
  });

  it("rejects a missing subdirectory, a file, and a symlink leading out of the checkout", async () => {
    const missing = await rejection((await run(`${fixture.url}#main:nope`)).promise);
    expect(missing.code).toBe("SOURCE_NOT_FOUND");
    expect(missing.message).toContain("subdirectory 'nope' not found");
    const file = await rejection((await run(`${fixture.url}#main:plain.txt`)).promise);
    expect(file.code).toBe("SOURCE_NOT_FOUND");
    expect(file.message).toContain("is not a directory");
    const escape = await rejection((await run(`${fixture.url}#main:escape`)).promise);
    expect(escape.code).toBe("SOURCE_NOT_FOUND");
    expect(escape.message).toContain("outside the repository");
    const dotdot = await rejection((await run(`${fixture.url}#main:sub/../..`)).promise);
    expect(dotdot.code).toBe("VALIDATION_FAILED");
  });

  it("clones a private repository with the host's token, without logging it", async () => {
    const credentials: GitCredential[] = [
      { host: "github.com", username: "someone-else", token: "github-token-not-for-this-host" },
      { host: serverHost, username: PRIVATE_USERNAME, token: PRIVATE_TOKEN },
    ];
    const { area, logs, promise } = await run(`${PRIVATE}#main`, { gitCredentials: credentials });
    const fetched = await promise;
    expect(fetched.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(existsSync(path.join(area.workDir, "main.py"))).toBe(true);
    expect(logs.length).toBeGreaterThan(2);
    for (const line of logs) {
      expect(line).not.toContain(PRIVATE_TOKEN);
      expect(line).not.toContain("github-token-not-for-this-host");
    }
  });

  it("fails with SOURCE_AUTH_FAILED when the private repository's host has no token", async () => {
    const { area, promise } = await run(`${PRIVATE}#main`);
    const error = await rejection(promise);
    expect(error.code).toBe("SOURCE_AUTH_FAILED");
    expect(error.message).toBe(`authentication failed for ${serverHost}: set a token for this host on the worker`);
    expect(error.retryable).toBe(false);
    expect(await listTree(area.workDir)).not.toContain("main.py");
  });

  it("never sends a token to another host", async () => {
    const { promise } = await run(`${PRIVATE}#main`, {
      gitCredentials: [{ host: "git.example.com", username: PRIVATE_USERNAME, token: PRIVATE_TOKEN }],
    });
    const error = await rejection(promise);
    expect(error.code).toBe("SOURCE_AUTH_FAILED");
    expect(error.message).toContain("set a token for this host");
  });

  it("fails with SOURCE_AUTH_FAILED for a wrong token, which appears in no log line or error", async () => {
    const wrong = `wrong-${PRIVATE_TOKEN}-zz91`;
    const { logs, promise } = await run(`${PRIVATE}#main`, {
      gitCredentials: [{ host: serverHost, username: PRIVATE_USERNAME, token: wrong }],
    });
    const error = await rejection(promise);
    expect(error.code).toBe("SOURCE_AUTH_FAILED");
    expect(error.message).toMatch(new RegExp(`^authentication failed for ${serverHost.replace(/\./g, "\\.")}: `));
    const seen = [error.message, JSON.stringify(error), String(error.cause), JSON.stringify(error.cause), error.stack ?? "", ...logs].join("\n");
    expect(seen).not.toContain(wrong);
    expect(seen).not.toContain("zz91");
  });

  it("fails with SOURCE_NOT_FOUND for an unknown repository", async () => {
    const error = await rejection((await run(`${GIT_SERVER_URL}/examples/no-such-repo.git`)).promise);
    expect(error.code).toBe("SOURCE_NOT_FOUND");
    expect(error.message).toContain(`repository ${GIT_SERVER_URL}/examples/no-such-repo.git not found`);
  });

  it("fails with SOURCE_NOT_FOUND naming an unknown ref", async () => {
    const error = await rejection((await run(`${PUBLIC}#no-such-branch`)).promise);
    expect(error.code).toBe("SOURCE_NOT_FOUND");
    expect(error.message).toContain("ref 'no-such-branch' not found");
  });

  it("refuses http URLs unless the policy allows them, before touching the network or disk", async () => {
    const { area, promise } = await run(`${PUBLIC}#main`, { policy: { allowHttp: false, allowDir: false } });
    const error = await rejection(promise);
    expect(error.code).toBe("SOURCE_NOT_ALLOWED");
    expect(error.message).toBe("http sources are disabled; use https or ask the operator to set ALLOW_HTTP_SOURCES");
    expect(await listTree(area.workDir)).toEqual([]);
  });

  it("reports an unreachable server as a retryable SOURCE_FETCH_FAILED", async () => {
    const error = await rejection((await run("http://127.0.0.1:1/repo.git")).promise);
    expect(error.code).toBe("SOURCE_FETCH_FAILED");
    expect(error.retryable).toBe(true);
    expect(error.message).toContain("127.0.0.1:1");
  });

  it("stops when the signal is aborted", async () => {
    const controller = new AbortController();
    controller.abort(new Error("build cancelled"));
    const { promise } = await run(`${PUBLIC}#main`, { signal: controller.signal });
    await expect(promise).rejects.toThrow("build cancelled");
  });
});
