import { apiFetch, waitUntil as waitFor, type BuildRecordView as RecordView, registryDigest } from "../src/index.js";
import Docker from "dockerode";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGitFixture, isTerminal, services, startPrivateRedis, startStack, submit, type PrivateService, type RunningStack } from "../src/index.js";

// Three workers, each with its own Docker daemon (scripts/fleet.sh up 3 starts daemons 2 and 3),
// sharing one Redis; and one stack on a Redis of its own that is restarted mid-build.
const FLEET_SOCKETS = ["/var/run/docker.sock", "/var/run/docker-w2.sock", "/var/run/docker-w3.sock"];
const run = Date.now().toString(36);
const emptyDir = mkdtempSync(path.join(tmpdir(), "m1l0-empty-"));
const cleanups: Array<() => void> = [];

function sleeperConfig(marker: string, seconds: number) {
  const fixture = createGitFixture(emptyDir, { Dockerfile: `FROM ${services.baseImageBusybox}\nRUN echo ${marker} && sleep ${seconds}\n` });
  cleanups.push(fixture.cleanup);
  return { service: "dockerhub", repository: "m1l0/e2e-fleet", revision: `${run}-${marker}`, source: fixture.url, dockerfile: "Dockerfile" };
}


afterAll(() => {
  for (const cleanup of cleanups) cleanup();
  rmSync(emptyDir, { recursive: true, force: true });
});

describe("a fleet of 3 workers, each with its own Docker daemon", () => {
  let stack: RunningStack;
  const workerIds = [`fleet1-${run}`, `fleet2-${run}`, `fleet3-${run}`];

  beforeAll(async () => {
    const missing = FLEET_SOCKETS.filter((socket) => !existsSync(socket));
    if (missing.length) throw new Error(`fleet daemons missing (${missing.join(", ")}): run \`bash scripts/fleet.sh up 3\` (scripts/test.sh does)`);
    stack = await startStack({
      concurrency: 1,
      workerEnv: { WORKER_ID: workerIds[0], DOCKER_SOCKET: FLEET_SOCKETS[0] },
      extraWorkers: [
        { WORKER_ID: workerIds[1], DOCKER_SOCKET: FLEET_SOCKETS[1] },
        { WORKER_ID: workerIds[2], DOCKER_SOCKET: FLEET_SOCKETS[2] },
      ],
    });
  });
  afterAll(async () => stack?.stop());

  it("6 builds: all succeed across several workers; record, logs and pushed image are right whichever worker ran it", async () => {
    const ids = await Promise.all(Array.from({ length: 6 }, (_, index) => submit(stack.apiUrl, sleeperConfig(`fleet-${index}-${run}`, 2))));
    const records = await Promise.all(ids.map((id) => waitFor(stack.apiUrl, id, isTerminal, 180_000, 250)));
    for (const record of records) expect(record.status, JSON.stringify(record)).toBe("succeeded");
    const ranOn = new Set(records.map((record) => record.worker));
    expect([...ranOn].every((worker) => worker !== undefined && workerIds.includes(worker))).toBe(true);
    expect(ranOn.size).toBeGreaterThanOrEqual(2);

    for (const record of records) {
      // the image in the registry is the one the record names, whichever daemon built it
      expect(await registryDigest(record.image!.repository, record.image!.tag)).toBe(record.image!.digest);
      const log = await (await apiFetch(`${stack.apiUrl}/builds/${record.id}/logs`)).text();
      expect(log).toMatch(/\[build\] Step 2\/\d : RUN echo fleet-/);
      expect(log).toMatch(/\[push\] pushed .*@sha256:/);
      // the daemon that built it holds the image; another worker's daemon does not
      const builtOn = new Docker({ socketPath: FLEET_SOCKETS[workerIds.indexOf(record.worker!)]! });
      await expect(builtOn.getImage(record.image!.reference).inspect()).resolves.toBeTruthy();
    }
    const listed = (await (await apiFetch(`${stack.apiUrl}/builds?limit=50`)).json()) as { builds: RecordView[] };
    expect(listed.builds.filter((build) => ids.includes(build.id))).toHaveLength(6);
  });

  it("cancel reaches a build running on a worker other than the first, and its daemon is left clean", async () => {
    const markers = [0, 1, 2].map((index) => `fleet-cancel-${index}-${run}`);
    const ids = await Promise.all(markers.map((marker) => submit(stack.apiUrl, sleeperConfig(marker, 60))));
    const running = await Promise.all(ids.map((id) => waitFor(stack.apiUrl, id, (record) => record.status === "building", 60_000)));
    const target = running.find((record) => record.worker !== workerIds[0]);
    expect(target, JSON.stringify(running)).toBeDefined();
    const daemon = new Docker({ socketPath: FLEET_SOCKETS[workerIds.indexOf(target!.worker!)]! });
    const marker = markers[ids.indexOf(target!.id)]!;
    const withMarker = async () => (await daemon.listContainers({ all: true })).filter((container) => container.Command.includes(marker));
    const deadline = Date.now() + 30_000;
    while ((await withMarker()).length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await withMarker()).toHaveLength(1);

    const started = Date.now();
    expect((await apiFetch(`${stack.apiUrl}/builds/${target!.id}`, { method: "DELETE" })).status).toBe(202);
    const cancelled = await waitFor(stack.apiUrl, target!.id, isTerminal, 5_000, 50);
    expect(cancelled.status).toBe("cancelled");
    expect(Date.now() - started).toBeLessThan(5_000);
    const cleanDeadline = Date.now() + 5_000;
    while ((await withMarker()).length > 0 && Date.now() < cleanDeadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await withMarker()).toEqual([]);

    for (const id of ids.filter((id) => id !== target!.id)) await apiFetch(`${stack.apiUrl}/builds/${id}`, { method: "DELETE" });
    for (const id of ids) expect((await waitFor(stack.apiUrl, id, isTerminal, 10_000)).status).toBe("cancelled");
  });
});

describe("a Redis restart mid-build (a Redis of this test's own, AOF on)", () => {
  let redis: PrivateService;
  let stack: RunningStack;

  beforeAll(async () => {
    redis = await startPrivateRedis();
    stack = await startStack({ concurrency: 1, redisUrl: redis.address });
  });
  afterAll(async () => {
    await stack?.stop();
    await redis?.destroy();
  });

  it("the build still completes, and the API answers 503 while Redis is down and recovers by itself", async () => {
    const id = await submit(stack.apiUrl, sleeperConfig(`redis-restart-${run}`, 6));
    await waitFor(stack.apiUrl, id, (record) => record.status === "building", 60_000);
    await redis.stop();
    const down = Date.now();
    const ready = await fetch(`${stack.apiUrl}/readyz`);
    expect(ready.status).toBe(503);
    const find = await apiFetch(`${stack.apiUrl}/builds/${id}`);
    expect(find.status).toBe(503);
    expect(Date.now() - down).toBeLessThan(10_000); // fails fast, does not hang
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    await redis.start();

    const record = await waitFor(stack.apiUrl, id, isTerminal, 120_000, 250);
    expect(record.status, await (await apiFetch(`${stack.apiUrl}/builds/${id}/logs`)).text()).toBe("succeeded");
    expect((await fetch(`${stack.apiUrl}/readyz`)).status).toBe(200);
    expect(await registryDigest(record.image!.repository, record.image!.tag)).toBe(record.image!.digest);
  });
});
