import { lstat, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetchSource, type SourcePolicy } from "../src/index.js";
import { GIT_FIXTURES_DIR, GIT_SERVER_URL, git, listTree, rejection, scratch, uniqueName } from "./helpers.js";

const PUBLIC = `${GIT_SERVER_URL}/examples/mnist.git`;
// Only the addresses the test servers listen on: everything else on loopback stays refused.
const policy: SourcePolicy = { allowHttp: true, allowDir: false, hostAllowlist: ["127.0.0.1/32"] };
const PASSWD_LINE = /root:.*:0:0:/;

let redirector: Server;
let redirectorUrl = "";
/** path → Location the redirector answers with (for every request under that path) */
const redirects = new Map<string, string>();
const hits: string[] = [];
let trickler: Server;
let tricklerUrl = "";

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

/** Rewrites every pkt-line of a body with `change` (lengths recomputed); stops at the first non-pkt byte. */
function rewritePktLines(body: Buffer, change: (payload: Buffer) => Buffer): Buffer {
  const out: Buffer[] = [];
  for (let position = 0; position + 4 <= body.length; ) {
    const length = Number.parseInt(body.toString("latin1", position, position + 4), 16);
    if (Number.isNaN(length)) return Buffer.concat([...out, body.subarray(position)]);
    if (length < 4) {
      out.push(body.subarray(position, position + 4));
      position += 4;
      continue;
    }
    const payload = change(body.subarray(position + 4, position + length));
    out.push(Buffer.from((payload.length + 4).toString(16).padStart(4, "0"), "latin1"), payload);
    position += length;
  }
  return Buffer.concat(out);
}

/** A proxy in front of the real git server that changes its answers: the ref advertisement or the upload-pack response. */
function gitProxy(change: { advertisement?: (body: Buffer) => Buffer; pack?: (body: Buffer) => Buffer }): Server {
  return createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const upstream = await fetch(`${GIT_SERVER_URL}${request.url}`, {
      method: request.method ?? "GET",
      headers: { "content-type": String(request.headers["content-type"] ?? "") },
      ...(request.method === "POST" ? { body: Buffer.concat(chunks) } : {}),
    });
    let body: Buffer = Buffer.from(await upstream.arrayBuffer());
    const changeBody = (request.url ?? "").includes("/info/refs") ? change.advertisement : change.pack;
    if (changeBody) body = changeBody(body);
    response.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "" }).end(body);
  });
}

let noShallow: Server;
let noShallowUrl = "";
let corrupting: Server;
let corruptingUrl = "";

const symlinkRepo = { group: uniqueName("test-hostile-links"), url: "" };

beforeAll(async () => {
  redirector = createServer((request, response) => {
    hits.push(request.url ?? "");
    const key = (request.url ?? "").split("/")[1] ?? "";
    const location = redirects.get(key);
    if (!location) return response.writeHead(404).end();
    const rest = (request.url ?? "").slice(key.length + 1);
    // 307 keeps the method: the upload-pack POST follows it too
    response.writeHead(307, { location: location.includes("{rest}") ? location.replace("{rest}", rest) : location }).end();
  });
  redirectorUrl = await listen(redirector);
  // Answers slowly forever: one byte every 100 ms, so no idle timeout ever fires.
  trickler = createServer((_request, response) => {
    response.writeHead(200, { "content-type": "application/x-git-upload-pack-advertisement" });
    // a well-formed start, then a ref line that never ends
    response.write("001e# service=git-upload-pack\n0000fff0");
    const timer = setInterval(() => response.write("0"), 100);
    response.on("close", () => clearInterval(timer));
  });
  tricklerUrl = await listen(trickler);
  // a server that offers no shallow fetch: the capability taken out of its advertisement
  noShallow = gitProxy({ advertisement: (body) => rewritePktLines(body, (payload) => Buffer.from(payload.toString("latin1").replace(/ shallow(?= |\n|$)/, ""), "latin1")) });
  noShallowUrl = await listen(noShallow);
  // a server (or a connection) that flips one byte near the end of the pack
  corrupting = gitProxy({
    pack: (body) => {
      const copy = Buffer.from(body);
      copy[copy.length - 40] = copy[copy.length - 40]! ^ 0xff;
      return copy;
    },
  });
  corruptingUrl = await listen(corrupting);

  const bare = path.join(GIT_FIXTURES_DIR, symlinkRepo.group, "repo.git");
  const work = await mkdtemp(path.join(os.tmpdir(), "m1l0-hostile-fixture-"));
  try {
    git(work, "init", "-q", "-b", "main");
    await symlink("/etc/passwd", path.join(work, "main.py"));
    await symlink("../../../../../../../../etc/passwd", path.join(work, "requirements.txt"));
    await symlink("/etc/passwd", path.join(work, "Dockerfile"));
    await symlink("/etc", path.join(work, "etc-dir"));
    await mkdir(path.join(work, "src"));
    await writeFile(path.join(work, "src", "real.py"), "print('ok')\n");
    await symlink("real.py", path.join(work, "src", "inside-link.py"));
    await symlink("../src/../../outside", path.join(work, "src", "sneaky"));
    git(work, "add", "-A");
    git(work, "commit", "-q", "-m", "links");
    await mkdir(path.dirname(bare), { recursive: true });
    git(work, "init", "-q", "--bare", bare);
    git(work, "push", "-q", bare, "main");
    git(bare, "symbolic-ref", "HEAD", "refs/heads/main");
    symlinkRepo.url = `${GIT_SERVER_URL}/${symlinkRepo.group}/repo.git`;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});

afterAll(async () => {
  redirector.close();
  trickler.closeAllConnections();
  trickler.close();
  noShallow.close();
  corrupting.close();
  await rm(path.join(GIT_FIXTURES_DIR, symlinkRepo.group), { recursive: true, force: true });
});

async function attempt(source: string, extra: Partial<SourcePolicy> = {}) {
  const area = await scratch();
  const logs: string[] = [];
  try {
    const error = await rejection(fetchSource({ source, workDir: area.workDir, policy: { ...policy, ...extra }, onLog: (line) => logs.push(line) }));
    expect(await area.outsideWork(), "nothing may be written outside the work directory").toEqual([]);
    return { error, logs };
  } finally {
    await area.cleanup();
  }
}

describe("git sources: redirects are checked hop by hop", () => {
  const gitServer = new URL(GIT_SERVER_URL);
  it.each([
    ["to another loopback address", `http://127.0.0.2:${gitServer.port}/examples/mnist.git{rest}`, "SOURCE_NOT_ALLOWED", "127.0.0.2 is not allowed: a loopback address"],
    ["to IPv6 loopback", `http://[::1]:${gitServer.port}/examples/mnist.git{rest}`, "SOURCE_NOT_ALLOWED", "::1 is not allowed: a loopback address"],
    ["to localhost by name", `http://localhost:${gitServer.port}/examples/mnist.git{rest}`, "SOURCE_NOT_ALLOWED", "localhost is not allowed: it is a loopback name"],
    ["to the cloud metadata service", "http://169.254.169.254/latest/meta-data/", "SOURCE_NOT_ALLOWED", "a cloud metadata address"],
    ["to the metadata service spelled in decimal", "http://2852039166/latest/meta-data/", "SOURCE_NOT_ALLOWED", "a cloud metadata address"],
    ["to a private address", "http://10.0.0.1/repo.git{rest}", "SOURCE_NOT_ALLOWED", "a private address"],
    ["to an IPv4-mapped loopback address", `http://[::ffff:7f00:2]:${gitServer.port}/x`, "SOURCE_NOT_ALLOWED", "a loopback address"],
    ["to file://", "file:///etc/passwd", "SOURCE_NOT_ALLOWED", "unsupported git URL scheme file"],
    ["to gopher://", "gopher://127.0.0.1:6379/_FLUSHALL", "SOURCE_NOT_ALLOWED", "unsupported git URL scheme gopher"],
  ])("refuses a redirect %s", async (_label, location, code, message) => {
    const key = uniqueName("redirect");
    redirects.set(key, location);
    const { error, logs } = await attempt(`${redirectorUrl}/${key}`);
    expect(error.code).toBe(code);
    expect(error.message).toContain(message);
    expect(error.retryable).toBe(false);
    expect(hits.some((hit) => hit.startsWith(`/${key}/info/refs`))).toBe(true);
    expect(logs.join("\n")).not.toContain("resolved commit");
  });

  it("follows a redirect to an allowed host and clones from there", async () => {
    const key = uniqueName("redirect");
    redirects.set(key, `${PUBLIC}{rest}`);
    const area = await scratch();
    try {
      const logs: string[] = [];
      const fetched = await fetchSource({ source: `${redirectorUrl}/${key}#main`, workDir: area.workDir, policy, onLog: (line) => logs.push(line) });
      expect(fetched.commit).toMatch(/^[0-9a-f]{40}$/);
      expect(await listTree(area.workDir)).toContain("main.py");
      expect(logs.some((line) => line.startsWith("redirected to http://127.0.0.1:"))).toBe(true);
    } finally {
      await area.cleanup();
    }
  });

  it("clones through isomorphic-git when the server offers no shallow fetch", async () => {
    const area = await scratch();
    try {
      const logs: string[] = [];
      const fetched = await fetchSource({ source: `${noShallowUrl}/examples/mnist.git#main`, workDir: area.workDir, policy, onLog: (line) => logs.push(line) });
      expect(logs).toContain("the server does not offer a shallow fetch over side-band; cloning with isomorphic-git");
      expect(fetched.commit).toBe(git(os.tmpdir(), "ls-remote", PUBLIC, "refs/heads/main").split("\t")[0]);
      expect(await listTree(area.workDir)).toContain("main.py");
    } finally {
      await area.cleanup();
    }
  });

  it("refuses a pack whose checksum does not match what arrived", async () => {
    const { error } = await attempt(`${corruptingUrl}/examples/mnist.git#main`);
    expect(error.code).toBe("SOURCE_FETCH_FAILED");
    expect(error.message).toMatch(/the pack's checksum does not match what was received \(\d+ bytes\)/);
    expect(error.retryable).toBe(true);
  });

  it("gives up after 5 redirects", async () => {
    const key = uniqueName("loop");
    redirects.set(key, `${redirectorUrl}/${key}{rest}`);
    const { error } = await attempt(`${redirectorUrl}/${key}`);
    expect(error.code).toBe("SOURCE_FETCH_FAILED");
    expect(error.message).toContain("redirected more than 5 times");
  });
});

describe("git sources: caps", () => {
  it("refuses loopback when nothing is allowlisted (the default policy)", async () => {
    const { error } = await attempt(`${PUBLIC}#main`, { hostAllowlist: [] });
    expect(error.code).toBe("SOURCE_NOT_ALLOWED");
    expect(error.message).toContain("127.0.0.1 is not allowed: a loopback address");
  });

  it("stops a clone larger than the byte cap with a clear message", async () => {
    const { error } = await attempt(`${PUBLIC}#main`, { cloneMaxBytes: 2000 });
    expect(error.code).toBe("SOURCE_FETCH_FAILED");
    expect(error.message).toMatch(/^repository http:\/\/127\.0\.0\.1:\d+\/examples\/mnist\.git is larger than 2\.0 KiB \(the worker's CLONE_MAX_BYTES\)/);
    expect(error.retryable).toBe(false);
  });

  it("stops a server that trickles bytes forever at the clone deadline", async () => {
    const started = Date.now();
    const { error } = await attempt(`${tricklerUrl}/slow.git`, { cloneTimeoutMs: 700 });
    expect(error.code).toBe("SOURCE_FETCH_FAILED");
    expect(error.message).toMatch(/^clone of http:\/\/127\.0\.0\.1:\d+\/slow\.git timed out after 0\.7 s \(the worker's CLONE_TIMEOUT_SECONDS\)$/);
    expect(Date.now() - started).toBeLessThan(5000);
  });
});

describe("git sources: symlinks in the repository", () => {
  it("removes links leaving the checkout (main.py, requirements.txt, Dockerfile -> /etc/passwd) and keeps links inside", async () => {
    const area = await scratch();
    try {
      const logs: string[] = [];
      const fetched = await fetchSource({ source: `${symlinkRepo.url}#main`, workDir: area.workDir, policy, onLog: (line) => logs.push(line) });
      const tree = await listTree(fetched.root);
      expect(tree).toEqual(["src", "src/inside-link.py", "src/real.py"]);
      expect((await lstat(path.join(fetched.root, "src/inside-link.py"))).isSymbolicLink()).toBe(true);
      for (const name of ["Dockerfile", "etc-dir", "main.py", "requirements.txt", "src/sneaky"]) {
        expect(logs).toContain(`removed symlink ${name}: it points outside the repository`);
      }
      // no byte of the worker's /etc/passwd anywhere under the work directory
      for (const entry of await readdir(area.base, { recursive: true, withFileTypes: true })) {
        if (entry.isFile()) expect(await readFile(path.join(entry.parentPath, entry.name), "utf8")).not.toMatch(PASSWD_LINE);
      }
      expect(await area.outsideWork()).toEqual([]);
    } finally {
      await area.cleanup();
    }
  });
});
