import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGitFixture, getLog, services, startStack, submit, waitForBuild, type RunningStack } from "../src/index.js";

/**
 * Build containment against the real stack: a Dockerfile whose FROM is outside the allowed
 * registries is refused before the daemon is asked (a recording proxy in front of the real Docker
 * socket proves no build request was made), and a forking RUN step hits the per-build pids limit
 * while the worker keeps serving builds.
 */
const run = Date.now().toString(36);
const emptyDir = mkdtempSync(path.join(tmpdir(), "m1l0-empty-"));
const proxyDir = mkdtempSync(path.join(tmpdir(), "m1l0-docker-proxy-"));
const proxySocket = path.join(proxyDir, "docker.sock");
const cleanups: Array<() => void> = [];
/** "METHOD /path" of every HTTP request the worker sent to the daemon */
const daemonRequests: string[] = [];
let proxy: Server;
let stack: RunningStack;

function repo(dockerfile: string): string {
  const fixture = createGitFixture(emptyDir, { Dockerfile: dockerfile });
  cleanups.push(fixture.cleanup);
  return fixture.url;
}

const config = (source: string, marker: string) => ({ service: "dockerhub", repository: "m1l0/e2e-containment", revision: `${run}-${marker}`, source, dockerfile: "Dockerfile" });
const buildRequests = () => daemonRequests.filter((request) => /^POST \/(v[\d.]+\/)?build\b/.test(request));

beforeAll(async () => {
  proxy = createServer((client) => {
    const daemon = connect("/var/run/docker.sock");
    client.on("data", (chunk: Buffer) => {
      // request lines of this connection (keep-alive carries several); tar bodies rarely look like one
      for (const match of chunk.toString("latin1").matchAll(/(?:^|\r\n)(GET|POST|PUT|DELETE|HEAD) (\/\S*) HTTP\/1\.1\r\n/g)) daemonRequests.push(`${match[1]} ${match[2]}`);
    });
    client.pipe(daemon).pipe(client);
    client.on("error", () => daemon.destroy());
    daemon.on("error", () => client.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(proxySocket, resolve));
  stack = await startStack({
    workerEnv: { DOCKER_SOCKET: proxySocket, ALLOWED_BASE_REGISTRIES: "docker.io", BUILD_PIDS_LIMIT: "64" },
    concurrency: 1,
  });
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  await new Promise<void>((resolve) => proxy.close(() => resolve()));
  for (const cleanup of cleanups) cleanup();
  rmSync(emptyDir, { recursive: true, force: true });
  rmSync(proxyDir, { recursive: true, force: true });
});

describe("build containment", () => {
  it("refuses a FROM outside ALLOWED_BASE_REGISTRIES before asking the daemon", async () => {
    const before = daemonRequests.length;
    const id = await submit(stack.apiUrl, config(repo("ARG REGISTRY=ghcr.io\nFROM ${REGISTRY}/evil/miner:1 AS base\nRUN true\n"), "refused"));
    const record = await waitForBuild(stack.apiUrl, id);
    expect(record.status).toBe("failed");
    expect(record.error?.code).toBe("BASE_IMAGE_NOT_ALLOWED");
    expect(record.error?.message).toContain("base image ghcr.io/evil/miner:1");
    expect(record.error?.message).toContain("ALLOWED_BASE_REGISTRIES (docker.io)");
    // a refusal is final: no retry, and the daemon never saw a build (nor a pull) for it
    expect(record.attempts).toBe(1);
    const during = daemonRequests.slice(before);
    expect(during.filter((request) => /\/build\b|\/images\/create/.test(request))).toEqual([]);
    expect(await getLog(stack.apiUrl, id)).toContain("BASE_IMAGE_NOT_ALLOWED");
  });

  it("fails a fork bomb with PIDS_LIMIT_EXCEEDED and keeps building afterwards", async () => {
    const forks = repo(`FROM ${services.baseImageBusybox}\nRUN i=0; while [ $i -lt 300 ]; do sleep 5 & i=$((i+1)); done; echo spawned $i; wait\n`);
    const id = await submit(stack.apiUrl, config(forks, "forks"));
    const record = await waitForBuild(stack.apiUrl, id);
    expect(record.status).toBe("failed");
    expect(record.error?.code).toBe("PIDS_LIMIT_EXCEEDED");
    expect(record.error?.message).toContain("limit of 64 processes (the worker's BUILD_PIDS_LIMIT)");
    // the proxy saw this one reach the daemon (the recorder works)
    expect(buildRequests().length).toBeGreaterThanOrEqual(1);

    const fine = await submit(stack.apiUrl, config(repo(`FROM ${services.baseImageBusybox}\nRUN for i in 1 2 3 4; do sleep 1 & done; wait; echo fine\n`), "fine"));
    expect((await waitForBuild(stack.apiUrl, fine)).status).toBe("succeeded");
    expect(stack.workers[0]!.exitCode).toBeNull();
  });
});
