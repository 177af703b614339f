import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFetch, reportFigures, sleeperRepo, startPrivateDockerd, startStack, submit, waitForBuild, waitUntil, type PrivateService, type RunningStack } from "@m1l0/e2e";
import { CHAOS_WORKER_ENV, seconds, chaosFile } from "../src/index.js";

// (c) The Docker daemon of the only worker (a private dockerd with its own socket, data and
// bridge) stops mid-build: the build fails after its retries with an actionable error, and
// the API stays healthy and keeps accepting builds.
const { run, cleanups } = chaosFile();

describe("chaos: a worker's dockerd stops", () => {
  let dockerd: PrivateService;
  let stack: RunningStack;
  beforeAll(async () => {
    dockerd = await startPrivateDockerd();
    stack = await startStack({ concurrency: 1, workerEnv: { ...CHAOS_WORKER_ENV, DOCKER_SOCKET: dockerd.address, WORKER_ID: `daemon-down-${run}` } });
  });
  afterAll(async () => {
    await stack?.stop();
    await dockerd?.destroy();
  });

  it("fails after retries with DAEMON_UNREACHABLE naming the socket; /healthz 200 and new submissions accepted meanwhile", async () => {
    const repo = sleeperRepo(`chaos-daemon-${run}`, 60);
    cleanups.push(repo.cleanup);
    const config = { service: "dockerhub", repository: "m1l0/chaos-daemon", revision: run, source: repo.url, dockerfile: "Dockerfile" };
    const id = await submit(stack.apiUrl, config);
    await waitUntil(stack.apiUrl, id, (record) => record.status === "building", 60_000);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const stoppedAt = Date.now();
    await dockerd.stop();

    // while the worker retries against a dead daemon, the API is unaffected
    expect((await fetch(`${stack.apiUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${stack.apiUrl}/readyz`)).status).toBe(200);
    const second = await submit(stack.apiUrl, { ...config, revision: `${run}-2` });

    const record = await waitForBuild(stack.apiUrl, id, 120_000);
    const failedMs = Date.now() - stoppedAt;
    expect(record.status).toBe("failed");
    expect(record.error?.code, JSON.stringify(record)).toBe("DAEMON_UNREACHABLE");
    expect(record.error?.message).toContain(dockerd.address);
    expect(record.error?.message).toMatch(/check that dockerd is running/);
    expect(record.attempts).toBe(3);
    expect(record.attemptErrors?.map((entry) => entry.code)).toEqual(["DAEMON_UNREACHABLE", "DAEMON_UNREACHABLE", "DAEMON_UNREACHABLE"]);
    expect((await fetch(`${stack.apiUrl}/healthz`)).status).toBe(200);
    expect((await apiFetch(`${stack.apiUrl}/builds/${second}`)).status).toBe(200);
    // the accepted build is cancelled, or has already failed the same way (409: finished)
    expect([202, 409]).toContain((await apiFetch(`${stack.apiUrl}/builds/${second}`, { method: "DELETE" })).status);
    reportFigures("chaos c (dockerd stopped)", `build failed ${seconds(failedMs)} s after the daemon stopped, after ${record.attempts} attempts: ${record.error?.code}: ${record.error?.message}; API healthy throughout`);
  });
});
