import { runNode, type Finished } from "@m1l0/testkit";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { ROOT_DIR, freePort, services, startStack, type RunningStack } from "../src/index.js";

const CLI = path.join(ROOT_DIR, "apps/cli/dist/main.js");
const mnistText = readFileSync(path.join(ROOT_DIR, "examples/mnist/m1l0.yaml"), "utf8");
const mnistConfig = parse(mnistText) as Record<string, unknown>;
const run = Date.now().toString(36);
const ANSI = /\x1b\[/;

let stack: RunningStack;
let artifactsDir: string | undefined;
let configDir: string;
let succeededBuildId: string | undefined;


/** Runs the built binary with piped stdio (so: not a terminal), like a script would. */
function m1l0(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Finished> {
  return runNode([CLI, ...args], { env: { PATH: process.env.PATH, M1L0_API_URL: stack.apiUrl, M1L0_TOKEN: stack.token, ...env } });
}

function writeConfig(name: string, content: string | Record<string, unknown>): string {
  const file = path.join(configDir, name);
  writeFileSync(file, typeof content === "string" ? content : stringify(content));
  return file;
}

beforeAll(async () => {
  // its own archive folder: the history it pages through holds this stack's builds only
  artifactsDir = mkdtempSync(path.join(tmpdir(), "m1l0-e2e-artifacts-"));
  stack = await startStack({ apiEnv: { ARTIFACTS_DIR: artifactsDir }, workerEnv: { ARTIFACTS_DIR: artifactsDir } });
  configDir = mkdtempSync(path.join(tmpdir(), "m1l0-cli-"));
});

afterAll(async () => {
  await stack?.stop();
  if (artifactsDir) rmSync(artifactsDir, { recursive: true, force: true });
  if (configDir) rmSync(configDir, { recursive: true, force: true });
});

describe("m1l0 CLI (built binary) against the real stack", () => {
  it("build --follow shows every phase and ends with the image reference", async () => {
    const revision = `cli-${run}`;
    const file = writeConfig("mnist.yaml", mnistText.replace(/^revision: .*$/m, `revision: ${revision}`));
    const result = await m1l0(["build", file, "--follow"]);
    expect(result.code, result.stderr + stack.logs.join("\n")).toBe(0);

    const progress = result.stderr;
    const phases = [...progress.matchAll(/^==> (\w+)$/gm)].map((match) => match[1]);
    expect(phases).toEqual(["queued", "fetching", "building", "pushing"]);
    expect(progress).toMatch(/^\[fetch\] resolved commit [0-9a-f]{40}( \(main\))?$/m);
    expect(progress).toMatch(/^\[build\] Step \d+\/\d+ : /m);
    expect(progress).toMatch(/^\[push\] [0-9a-f]{12}: (Pushed|Layer already exists)$/m);
    expect(progress).toMatch(/^==> build bld_\w+ succeeded in \d/m);
    // logs come before the outcome line
    expect(progress.indexOf("[build] Step")).toBeLessThan(progress.indexOf("succeeded in"));

    const reference = `${services.registryHost}/m1l0/mnist:${revision}`;
    expect(result.stdout).toMatch(new RegExp(`^image: ${reference.replace(/[.:/]/g, "\\$&")}$`, "m"));
    expect(result.stdout).toMatch(/^digest: sha256:[0-9a-f]{64}$/m);
    expect(result.stdout.trim().split("\n").at(-1)).toMatch(/^digest: /);
    expect(result.stdout + result.stderr).not.toMatch(ANSI);
    succeededBuildId = /^id: (\S+)$/m.exec(result.stdout)?.[1];
    expect(succeededBuildId).toMatch(/^bld_/);
  });

  it("status, list and logs print parseable JSON with --json, and plain text without it", async () => {
    expect(succeededBuildId, "needs the build of the first test").toBeDefined();
    const id = succeededBuildId!;

    const status = await m1l0(["status", id, "--json"]);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ id, status: "succeeded", image: { reference: expect.stringContaining("m1l0/mnist:cli-") } });

    const list = await m1l0(["list", "--json", "--status", "succeeded", "--limit", "200"]);
    expect(list.code, list.stderr).toBe(0);
    const builds = JSON.parse(list.stdout) as Array<{ id: string; status: string }>;
    expect(builds.map((build) => build.id)).toContain(id);
    expect(builds.every((build) => build.status === "succeeded")).toBe(true);

    const logs = await m1l0(["logs", id, "--json"]);
    expect(logs.code, logs.stderr).toBe(0);
    const { lines } = JSON.parse(logs.stdout) as { lines: string[] };
    expect(lines.some((line) => /\[push\] pushed .*@sha256:/.test(line))).toBe(true);

    const followed = await m1l0(["logs", id, "--follow", "--json"]);
    expect(followed.code, followed.stderr).toBe(0);
    const events = followed.stdout.trim().split("\n").map((line) => JSON.parse(line) as { id: string; event: { type: string; status?: string } });
    expect(events.at(-1)?.event).toMatchObject({ type: "status", status: "succeeded" });

    const plainStatus = await m1l0(["status", id]);
    expect(plainStatus.stdout).toMatch(/^status:\s+succeeded$/m);
    expect(plainStatus.stdout).toMatch(/^digest:\s+sha256:/m);
    const plainList = await m1l0(["list", "--limit", "200"]);
    expect(plainList.stdout).toMatch(new RegExp(`^${id}\\s+succeeded\\s+m1l0/mnist:cli-`, "m"));
    const plainLogs = await m1l0(["logs", id, "--follow"]);
    expect(plainLogs.stdout).toMatch(/\[status\] succeeded: .*@sha256:/);
    for (const output of [plainStatus, plainList, plainLogs]) expect(output.stdout + output.stderr).not.toMatch(ANSI);
  });

  it("rejects a config with bad fields locally with exit code 2, naming each field", async () => {
    const file = writeConfig("bad.yaml", mnistText.replace('pyversion: "3.11"', "pyversion: 3.11").replace("repository: m1l0/mnist", "repository: M1L0 Mnist"));
    // validated before anything is sent: an API that cannot be reached is never asked
    const result = await m1l0(["build", file, "--follow", "--api", `http://127.0.0.1:${await freePort()}`]);
    expect(result.code, result.stderr).toBe(2);
    expect(result.stderr).toContain(`invalid config ${file}`);
    expect(result.stderr).not.toContain("API_UNREACHABLE");
    expect(result.stderr).toMatch(/^ {2}pyversion: must be a string: quote it/m);
    expect(result.stderr).toMatch(/^ {2}repository: must be lowercase/m);
    expect(result.stdout).toBe("");
  });

  it("prints every field issue of a config the API rejects, exit code 2", async () => {
    // valid locally, but this service does not allow dir:// sources
    const file = writeConfig("dir-source.json", JSON.stringify({ ...mnistConfig, source: "dir:///srv/mnist" }));
    const result = await m1l0(["build", file, "--no-follow"]);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/SOURCE_NOT_ALLOWED/);
    expect(result.stderr).toMatch(/^ {2}source: dir:\/\/ sources are not allowed here$/m);
  });

  it("a failing build exits 1 with its reason", async () => {
    const file = writeConfig("missing-entry.yaml", { ...mnistConfig, entry: "missing.py", revision: `cli-fail-${run}` });
    const result = await m1l0(["build", file, "--follow"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^==> build bld_\w+ failed after .*: ENTRY_NOT_FOUND: .*missing\.py/m);
    expect(result.stdout).not.toMatch(/^image:/m);
    expect(result.stderr).not.toMatch(ANSI);
  });

  it("list pages newest first: --limit with the printed --cursor, and --all, each build once", async () => {
    const everything = JSON.parse((await m1l0(["list", "--json", "--limit", "500"])).stdout) as Array<{ id: string }>;
    expect(everything.length, "needs the builds of the tests before").toBeGreaterThanOrEqual(2);
    const paged: string[] = [];
    let args = ["list", "--json", "--limit", "1"];
    for (let page = 0; page <= everything.length; page++) {
      const result = await m1l0(args);
      expect(result.code, result.stderr).toBe(0);
      paged.push(...(JSON.parse(result.stdout) as Array<{ id: string }>).map((build) => build.id));
      const next = /^next page: --cursor (\S+)$/m.exec(result.stderr)?.[1];
      if (!next) break;
      args = ["list", "--json", "--limit", "1", "--cursor", next];
    }
    expect(paged).toEqual(everything.map((build) => build.id));
    const all = await m1l0(["list", "--json", "--limit", "1", "--all"]);
    expect((JSON.parse(all.stdout) as Array<{ id: string }>).map((build) => build.id)).toEqual(paged);
    expect(all.stderr).not.toMatch(/next page/);
    const bad = await m1l0(["list", "--cursor", "nonsense"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/cursor/);
  });

  it("says what to set when the API refuses the token, and reads M1L0_TOKEN_FILE", async () => {
    const missing = await m1l0(["list"], { M1L0_TOKEN: "" });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^m1l0: UNAUTHENTICATED: an API token is required: send Authorization: Bearer <token> \(set M1L0_TOKEN, M1L0_TOKEN_FILE or --token\)$/m);
    const wrong = await m1l0(["list", "--token", "m1l0_wrong"]);
    expect(wrong.stderr).toMatch(/UNAUTHENTICATED: invalid API token/);
    expect(wrong.stderr).not.toContain("m1l0_wrong");
    const tokenFile = path.join(configDir, "token");
    writeFileSync(tokenFile, `${stack.token}\n`, { mode: 0o600 });
    const fromFile = await m1l0(["list", "--json"], { M1L0_TOKEN: "", M1L0_TOKEN_FILE: tokenFile });
    expect(fromFile.code, fromFile.stderr).toBe(0);
    expect(Array.isArray(JSON.parse(fromFile.stdout))).toBe(true);
  });

  it("says when the API cannot be reached (exit 1) and rejects bad usage (exit 2)", async () => {
    const closedPort = await freePort();
    const unreachable = await m1l0(["list", "--api", `http://127.0.0.1:${closedPort}`]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain(`API_UNREACHABLE: cannot reach the M1L0 API at http://127.0.0.1:${closedPort}: ECONNREFUSED`);
    expect((await m1l0(["frobnicate"])).code).toBe(2);
    expect((await m1l0(["list", "--limit", "zero"])).code).toBe(2);
    const help = await m1l0(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/m1l0 build <config\.yaml\|json>/);
  });
});
