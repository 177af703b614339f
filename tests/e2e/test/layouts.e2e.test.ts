import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT_DIR, createGitFixture, gatewayOf, getLog, startStack, submit, waitForBuild, type RunningStack, runImage, layerOf } from "../src/index.js";

/**
 * Each layout the generated Dockerfile installs, built for real: the worker on the host daemon,
 * the local Python base image, and for apt.txt an apt repository this test builds (dpkg-deb,
 * dpkg-scanpackages) and serves on the default bridge's gateway. The builds reach it through the
 * egress policy as an operator's mirror would: BUILD_EGRESS=public with the repository's
 * address:port in BUILD_EGRESS_ALLOW, and BUILD_APT_SOURCES naming it. No public mirror is used.
 */
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const run = Date.now().toString(36);
const network = `m1l0-e2e-layouts-${run}`;
const fixtures = path.join(ROOT_DIR, "tests/e2e/fixtures/layouts");
const repoDir = mkdtempSync(path.join(tmpdir(), "m1l0-apt-repo-"));
const cleanups: Array<() => Promise<void> | void> = [];
const served: string[] = [];
const PACKAGE = "m1l0-apt-hello";

let stack: RunningStack;

/** A one-file Debian package and the flat repository (`deb [trusted=yes] http://host/ ./`) that lists it. */
function buildAptRepository(dir: string): void {
  const root = path.join(dir, "build", PACKAGE);
  mkdirSync(path.join(root, "DEBIAN"), { recursive: true });
  mkdirSync(path.join(root, "usr/bin"), { recursive: true });
  writeFileSync(path.join(root, "DEBIAN/control"), `Package: ${PACKAGE}\nVersion: 1.0-${run}\nArchitecture: all\nMaintainer: m1l0 tests <tests@m1l0.invalid>\nDescription: installed from the layouts test's apt repository\n`);
  writeFileSync(path.join(root, `usr/bin/${PACKAGE}`), `#!/bin/sh\necho "hello from ${PACKAGE} ${run}"\n`);
  chmodSync(path.join(root, `usr/bin/${PACKAGE}`), 0o755);
  const pool = path.join(dir, "repo");
  mkdirSync(pool);
  execFileSync("dpkg-deb", ["--root-owner-group", "--build", root, path.join(pool, `${PACKAGE}_1.0_all.deb`)], { stdio: "pipe" });
  writeFileSync(path.join(pool, "Packages"), execFileSync("dpkg-scanpackages", ["--multiversion", "."], { cwd: pool, stdio: ["ignore", "pipe", "pipe"] }));
}

/** Serves the repository's files (by plain name only) and notes every request. */
function serveRepository(dir: string, host: string): Promise<{ server: Server; url: string }> {
  const server = createServer((request, response) => {
    const name = decodeURIComponent(new URL(request.url ?? "/", "http://x").pathname).replace(/^\/+(\.\/)?/, "");
    served.push(name);
    if (!/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(name)) return void response.writeHead(404).end();
    try {
      const body = readFileSync(path.join(dir, name));
      response.writeHead(200, { "content-length": body.length }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, () => {
      const address = server.address();
      if (!address || typeof address === "string") return reject(new Error("no port"));
      resolve({ server, url: `http://${host}:${address.port}/` });
    });
  });
}



/** `pyproject.toml` of this run: the daemon keeps layers between runs, and the first build must make its own. */
const pyproject = `${readFileSync(path.join(fixtures, "pyproject/pyproject.toml"), "utf8")}# run ${run}\n`;

async function build(project: string, label: string, edits: Record<string, string> = {}) {
  const fixture = createGitFixture(path.join(fixtures, project), { ...(project === "pyproject" ? { "pyproject.toml": pyproject } : {}), ...edits });
  cleanups.push(fixture.cleanup);
  const id = await submit(stack.apiUrl, { service: "dockerhub", repository: "m1l0/e2e-layouts", revision: `${label}-${run}`, source: fixture.url, entry: "main.py" });
  const record = await waitForBuild(stack.apiUrl, id);
  return { id, record, log: await getLog(stack.apiUrl, id) };
}

async function succeeded(project: string, label: string, edits: Record<string, string> = {}) {
  const result = await build(project, label, edits);
  expect(result.record.error, result.log + stack.logs.slice(-40).join("\n")).toBeUndefined();
  expect(result.record.status).toBe("succeeded");
  return result;
}

beforeAll(async () => {
  buildAptRepository(repoDir);
  const gateway = await gatewayOf("bridge");
  const { server, url } = await serveRepository(path.join(repoDir, "repo"), gateway);
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  stack = await startStack({
    concurrency: 1,
    workerEnv: {
      BUILD_NETWORK: network,
      BUILD_EGRESS: "public",
      BUILD_EGRESS_ALLOW: new URL(url).host,
      BUILD_APT_SOURCES: `deb [trusted=yes] ${url} ./`,
    },
  });
}, 300_000);

afterAll(async () => {
  await stack?.stop();
  try {
    execFileSync(process.execPath, [path.join(ROOT_DIR, "apps/worker/dist/main.js"), "egress", "remove"], { env: { PATH: process.env.PATH, BUILD_NETWORK: network, LOG_LEVEL: "silent" }, stdio: "ignore" });
  } catch {
    // never created
  }
  for (const cleanup of cleanups.reverse()) await cleanup();
  await docker.getNetwork(network).remove().catch(() => undefined);
  rmSync(repoDir, { recursive: true, force: true });
});

describe("layouts detected from the source, each built for real", () => {
  it("pyproject.toml: static dependencies before the code, pip install . after; a code-only change reuses the dependency layer", async () => {
    const first = await succeeded("pyproject", "pyproject-a");
    expect(first.record.layouts).toEqual(["pyproject.toml"]);
    expect(first.log).toContain("layout: pyproject.toml (pip install .; static dependencies before the code)");
    expect(first.log).toContain("m1l0: installing the dependencies pyproject.toml lists, before the code: numpy>=1.21");
    expect(first.log).toMatch(/Successfully installed m1l0demo-1\.0/);
    expect(await runImage(first.record.image!.reference)).toMatch(/^hello from the installed m1l0demo package in \/usr\/local\/lib\/python3\.11\/dist-packages\/m1l0demo with numpy \d/m);

    const main = readFileSync(path.join(fixtures, "pyproject/main.py"), "utf8");
    const second = await succeeded("pyproject", "pyproject-b", { "main.py": main.replace("print(m1l0demo.GREETING", 'print("changed:", m1l0demo.GREETING') });
    expect(second.record.commit).not.toBe(first.record.commit);
    const depsA = await layerOf(first.record.image!.reference, /tomllib/);
    expect(depsA).toBeDefined();
    expect(await layerOf(second.record.image!.reference, /tomllib/)).toBe(depsA);
    // the project install follows the code, so it runs again
    expect(await layerOf(second.record.image!.reference, /pip","install","\."|pip install \./)).not.toBe(await layerOf(first.record.image!.reference, /pip","install","\."|pip install \./));
    const step = second.log.indexOf("tomllib");
    expect(second.log.slice(step, step + 2000)).toMatch(/Using cache/);
    expect(await runImage(second.record.image!.reference)).toMatch(/^changed: hello from the installed m1l0demo package/m);
  });

  it("setup.py: pip install . of the project after the code", async () => {
    const { record, log } = await succeeded("setup-py", "setup-py");
    expect(record.layouts).toEqual(["setup.py"]);
    expect(log).toContain("layout: setup.py (pip install . after the code)");
    expect(await runImage(record.image!.reference)).toMatch(/^hello from the installed m1l0setup package in \/usr\/local\/lib\/python3\.11\/dist-packages\/m1l0setup/m);
  });

  it("apt.txt: installed first from the test's apt repository through the egress allowlist; a code-only change reuses the apt layer", async () => {
    const first = await succeeded("apt", "apt-a");
    expect(first.record.layouts).toEqual(["apt.txt"]);
    expect(first.log).toContain(`layout: apt.txt (${PACKAGE})`);
    expect(first.log).toMatch(new RegExp(`Get:\\d+ http://\\S+ \\./ ${PACKAGE} 1\\.0-${run}`));
    expect(served).toContain(`${PACKAGE}_1.0_all.deb`);
    expect(await runImage(first.record.image!.reference)).toContain(`hello from ${PACKAGE} ${run}`);

    const second = await succeeded("apt", "apt-b", { "main.py": `print("changed")\n${readFileSync(path.join(fixtures, "apt/main.py"), "utf8")}` });
    const aptA = await layerOf(first.record.image!.reference, /apt-get/);
    expect(aptA).toBeDefined();
    expect(await layerOf(second.record.image!.reference, /apt-get/)).toBe(aptA);
    const output = await runImage(second.record.image!.reference);
    expect(output).toContain("changed");
    expect(output).toContain(`hello from ${PACKAGE} ${run}`);
  });

  it("apt.txt: a package the repository does not have fails the apt step, named as such", async () => {
    const { record } = await build("apt", "apt-missing", { "apt.txt": "m1l0-no-such-package\n" });
    expect(record.status).toBe("failed");
    expect(record.error?.code).toBe("DEPENDENCY_INSTALL_FAILED");
    expect(record.error?.message).toMatch(/^installing the packages apt\.txt lists failed: E: Unable to locate package m1l0-no-such-package/);
    expect(record.attempts).toBe(1);
  });

  it("apt.txt on a worker whose builds have no network fails at apt-get update, saying where to look", async () => {
    // the stack's default: BUILD_NETWORK=none, the image's own sources (deb.debian.org)
    const offline = await startStack({ concurrency: 1 });
    cleanups.push(() => offline.stop());
    const fixture = createGitFixture(path.join(fixtures, "apt"));
    cleanups.push(fixture.cleanup);
    const id = await submit(offline.apiUrl, { service: "dockerhub", repository: "m1l0/e2e-layouts", revision: `offline-${run}`, source: fixture.url });
    const record = await waitForBuild(offline.apiUrl, id);
    expect(record.status, await getLog(offline.apiUrl, id)).toBe("failed");
    expect(record.error?.code).toBe("DEPENDENCY_INSTALL_FAILED");
    expect(record.error?.message).toMatch(/^installing the packages apt\.txt lists failed: E: Failed to fetch .*deb\.debian\.org/);
    expect(record.error?.message).toMatch(/BUILD_EGRESS, BUILD_APT_SOURCES/);
  });

  it.each([
    ["environment.yml", { "environment.yml": "name: x\ndependencies:\n  - numpy\n" }, "UNSUPPORTED_LAYOUT", /environment\.yml, which needs conda.*list the pip packages in requirements\.txt/],
    ["a bad apt.txt line", { "apt.txt": "m1l0-apt-hello\ncurl | sh\n" }, "INVALID_DEPENDENCY_FILE", /^apt\.txt line 2: "\|" is not a Debian package name/],
  ])("%s is refused before anything is built", async (label, edits, code, message) => {
    const { record, log } = await build("apt", `refused-${label.replace(/\W+/g, "-")}`, edits);
    expect(record.status).toBe("failed");
    expect(record.error?.code).toBe(code);
    expect(record.error?.message).toMatch(message);
    expect(record.attempts).toBe(1);
    expect(Object.keys(record.timestamps)).not.toContain("building");
    expect(log).not.toMatch(/Step \d+\/\d+/);
  });
});
