import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { containersWith, eventually, getBuild, reportFigures, sleeperRepo, startStack, statusEvents, submit, terminalEvents, waitForBuild, waitUntil, workEntriesOf, type RunningStack } from "@m1l0/e2e";
import { CHAOS_WORKER_ENV, FLEET_SOCKETS, requireFleet, seconds, chaosFile } from "../src/index.js";

// (a) SIGKILL the worker running a build (during `building`): a worker on another daemon takes
// it over once the lock lapses and completes it; exactly one final answer is recorded.
const { run, cleanups, workDir } = chaosFile();
const dir = workDir("kill");

describe("chaos: a worker killed mid-build", () => {
  let stack: RunningStack;
  const ids = [`kill1-${run}`, `kill2-${run}`];

  beforeAll(async () => {
    requireFleet();
    stack = await startStack({
      concurrency: 1,
      workerEnv: { ...CHAOS_WORKER_ENV, WORK_DIR: dir, WORKER_ID: ids[0], DOCKER_SOCKET: FLEET_SOCKETS[0] },
      extraWorkers: [{ WORKER_ID: ids[1], DOCKER_SOCKET: FLEET_SOCKETS[1] }],
    });
  });
  afterAll(async () => stack?.stop());

  it("another worker on another daemon completes it; one final status event; no container or work dir left", async () => {
    const marker = `chaos-kill-${run}`;
    const repo = sleeperRepo(marker, 8);
    cleanups.push(repo.cleanup);
    const id = await submit(stack.apiUrl, { service: "dockerhub", repository: "m1l0/chaos-kill", revision: run, source: repo.url, dockerfile: "Dockerfile" });
    const building = await waitUntil(stack.apiUrl, id, (record) => record.status === "building", 60_000);
    const victim = ids.indexOf(building.worker!);
    expect(victim).toBeGreaterThanOrEqual(0);
    const victimSocket = FLEET_SOCKETS[victim]!;
    // the RUN step's container exists: the daemon is really building
    await eventually(async () => (await containersWith(marker, victimSocket)).length > 0, 30_000, 100, "the RUN step's container");

    const killedAt = Date.now();
    stack.workers[victim]!.kill("SIGKILL");
    const pickedUp = await waitUntil(stack.apiUrl, id, (record) => record.worker !== building.worker && record.status !== "building", 60_000, 50);
    const pickupMs = Date.now() - killedAt;
    const record = await waitForBuild(stack.apiUrl, id, 120_000);
    const doneMs = Date.now() - killedAt;
    expect(record.status, JSON.stringify(record)).toBe("succeeded");
    expect(record.worker).toBe(ids[1 - victim]);
    expect(pickedUp.worker).toBe(ids[1 - victim]);
    expect(await terminalEvents(stack.apiUrl, id)).toEqual(["succeeded"]);
    expect((await statusEvents(stack.apiUrl, id)).filter((status) => status === "fetching")).toHaveLength(2);
    // the image is on the survivor's daemon; the victim's daemon aborted its build (client gone) and removed the container
    await expect(new Docker({ socketPath: FLEET_SOCKETS[1 - victim]! }).getImage(record.image!.reference).inspect()).resolves.toBeTruthy();
    await eventually(async () => (await containersWith(marker, victimSocket)).length === 0, 15_000, 200, "the killed build's container to be removed");

    // the killed worker's fetch dir is still there; a worker restarting on that host removes it
    expect(workEntriesOf(dir, id).length).toBeGreaterThan(0);
    stack.startWorker({ WORKER_ID: `${ids[victim]}-restarted`, DOCKER_SOCKET: victimSocket });
    await eventually(() => workEntriesOf(dir, id).length === 0, 30_000, 200, "the crashed build's work dir to be swept");
    expect((await getBuild(stack.apiUrl, id)).status).toBe("succeeded");

    reportFigures("chaos a (worker SIGKILL)", `recovery after kill: picked up by ${record.worker} after ${seconds(pickupMs)} s, succeeded ${seconds(doneMs)} s after the kill (lock ${CHAOS_WORKER_ENV.WORKER_LOCK_DURATION_MS} ms, stalled check ${CHAOS_WORKER_ENV.WORKER_STALLED_INTERVAL_MS} ms); final answers 1`);
    reportFigures("chaos", `jobs lost 0, duplicates 0 (final events 1), recovery after kill ${seconds(pickupMs)} s (pickup) / ${seconds(doneMs)} s (succeeded)`);
  });
});
