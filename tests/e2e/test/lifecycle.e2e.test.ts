import { apiFetch, getBuild as getRecord, waitUntil as waitFor } from "../src/index.js";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer, connect, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { containersWith, createGitFixture, eventually, freePort, isTerminal, services, startStack, submit, terminalEvents, type RunningStack } from "../src/index.js";

// Cancellation, timeouts, retries by cause and graceful shutdown, against the real stack.
const run = Date.now().toString(36);
const emptyDir = mkdtempSync(path.join(tmpdir(), "m1l0-empty-"));
const workDir = mkdtempSync(path.join(tmpdir(), "m1l0-lifecycle-work-"));
const cleanups: Array<() => void> = [];


async function logOf(apiUrl: string, id: string): Promise<string> {
  return (await apiFetch(`${apiUrl}/builds/${id}/logs`)).text();
}

/** A git repo whose only file is a Dockerfile: `RUN echo <marker> && sleep <seconds>`. */
function sleeperRepo(marker: string, seconds: number): string {
  const fixture = createGitFixture(emptyDir, { Dockerfile: `FROM ${services.baseImageBusybox}\nRUN echo ${marker} && sleep ${seconds}\n` });
  cleanups.push(fixture.cleanup);
  return fixture.url;
}

function sleeperConfig(marker: string, seconds: number, extra: Record<string, unknown> = {}) {
  return { service: "dockerhub", repository: "m1l0/e2e-lifecycle", revision: `${run}-${marker}`, source: sleeperRepo(marker, seconds), dockerfile: "Dockerfile", ...extra };
}

afterAll(() => {
  for (const cleanup of cleanups) cleanup();
  rmSync(emptyDir, { recursive: true, force: true });
  rmSync(workDir, { recursive: true, force: true });
});

describe("cancellation and timeouts", () => {
  let stack: RunningStack;
  beforeAll(async () => {
    stack = await startStack({
      concurrency: 1,
      workerEnv: { WORK_DIR: workDir, BUILD_TIMEOUT_MAX_SECONDS: "600" },
      apiEnv: { BUILD_TIMEOUT_MAX_SECONDS: "600" },
    });
  });
  afterAll(async () => stack?.stop());

  it("DELETE stops a running Docker build within 5 s: cancelled, not retried, no container or temp dir left", async () => {
    const marker = `cancel-running-${run}`;
    const id = await submit(stack.apiUrl, sleeperConfig(marker, 60));
    // wait until the RUN step's container exists, i.e. the daemon is really building
    await waitFor(stack.apiUrl, id, (record) => record.status === "building", 60_000);
    const deadline = Date.now() + 30_000;
    while ((await containersWith(marker)).length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await containersWith(marker)).toHaveLength(1);

    const cancelledAt = Date.now();
    const response = await apiFetch(`${stack.apiUrl}/builds/${id}`, { method: "DELETE" });
    expect(response.status).toBe(202);
    expect(await response.json()).toMatchObject({ id, cancel: "signalled" });
    const record = await waitFor(stack.apiUrl, id, isTerminal, 5_000, 50);
    expect(Date.now() - cancelledAt).toBeLessThan(5_000);
    expect(record.status).toBe("cancelled");
    expect(record.cancelRequestedAt).toBeTruthy();

    // the daemon removes the aborted build's intermediate container (forcerm) shortly after
    const cleanDeadline = Date.now() + 5_000;
    while ((await containersWith(marker)).length > 0 && Date.now() < cleanDeadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await containersWith(marker)).toEqual([]);
    // the fetch dir at once; the log spool once the log is archived, moments later
    await eventually(() => readdirSync(workDir).filter((name) => name.includes(id)).length === 0, 10_000, 100, `no work dir or spool of ${id}`);

    // not retried: still cancelled, one attempt, exactly one final answer
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    const later = await getRecord(stack.apiUrl, id);
    expect(later.status).toBe("cancelled");
    expect(later.attempts).toBe(1);
    expect(await terminalEvents(stack.apiUrl, id)).toEqual(["cancelled"]);

    const again = await apiFetch(`${stack.apiUrl}/builds/${id}`, { method: "DELETE" });
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ error: { code: "CONFLICT" } });
  });

  it("DELETE of a queued build removes its job: cancelled at once, never fetched", async () => {
    const blocker = await submit(stack.apiUrl, sleeperConfig(`blocker-${run}`, 60));
    await waitFor(stack.apiUrl, blocker, (record) => record.status === "building", 60_000);
    const queued = await submit(stack.apiUrl, sleeperConfig(`queued-${run}`, 1));
    const response = await apiFetch(`${stack.apiUrl}/builds/${queued}`, { method: "DELETE" });
    expect(response.status).toBe(202);
    expect(await response.json()).toMatchObject({ id: queued, status: "cancelled", cancel: "cancelled" });

    expect((await apiFetch(`${stack.apiUrl}/builds/${blocker}`, { method: "DELETE" })).status).toBe(202);
    await waitFor(stack.apiUrl, blocker, isTerminal, 5_000, 50);
    // the worker is free again: had the job survived, it would be picked up now
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const record = await getRecord(stack.apiUrl, queued);
    expect(record.status).toBe("cancelled");
    expect(record.timestamps.fetching).toBeUndefined();
    expect(record.attempts).toBe(0);
  });

  it("DELETE of an unknown build is 404", async () => {
    const response = await apiFetch(`${stack.apiUrl}/builds/bld_doesnotexist`, { method: "DELETE" });
    expect(response.status).toBe(404);
  });

  it("a build past its timeout is aborted and fails with 'timed out after N s', without retry", async () => {
    const marker = `timeout-${run}`;
    const id = await submit(stack.apiUrl, sleeperConfig(marker, 60, { timeout: 3 }));
    const record = await waitFor(stack.apiUrl, id, isTerminal, 30_000);
    expect(record.status).toBe("failed");
    expect(record.error).toEqual({ code: "BUILD_TIMEOUT", message: "timed out after 3 s" });
    expect(record.attempts).toBe(1);
    const cleanDeadline = Date.now() + 5_000;
    while ((await containersWith(marker)).length > 0 && Date.now() < cleanDeadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await containersWith(marker)).toEqual([]);
  });

  it("the API rejects a timeout above the operator maximum, naming the field", async () => {
    const response = await apiFetch(`${stack.apiUrl}/builds`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ service: "dockerhub", repository: "m1l0/e2e-lifecycle", source: `${services.gitServerUrl}/examples/mnist.git`, timeout: 601 }),
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: { code: string; issues: Array<{ field: string; message: string }> } };
    expect(body.error.code).toBe("VALIDATION_FAILED");
    expect(body.error.issues).toEqual([{ field: "timeout", message: "must be at most 600 seconds on this service" }]);
  });
});

describe("retries by cause", () => {
  let stack: RunningStack;
  let proxy: Server | undefined;
  beforeAll(async () => {
    stack = await startStack({ concurrency: 1 });
  });
  afterAll(async () => {
    proxy?.close();
    await stack?.stop();
  });

  it("a git server that is down for the first attempt: retried, succeeds, the record keeps the failed attempt", async () => {
    // the source points at a port where nothing listens yet; a TCP relay to the real git
    // server appears there once the first attempt has failed
    const port = await freePort();
    const gitUrl = new URL(sleeperRepo(`retry-${run}`, 0));
    const source = `http://127.0.0.1:${port}${gitUrl.pathname}`;
    const id = await submit(stack.apiUrl, { ...sleeperConfig(`retry-${run}`, 0), source });
    await waitFor(stack.apiUrl, id, (record) => (record.attemptErrors?.length ?? 0) >= 1 || isTerminal(record), 60_000, 50);
    proxy = createServer((client) => {
      const upstream = connect(Number(gitUrl.port), gitUrl.hostname);
      client.pipe(upstream).pipe(client);
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
    });
    await new Promise<void>((resolve) => proxy!.listen(port, "127.0.0.1", resolve));

    const record = await waitFor(stack.apiUrl, id, isTerminal, 120_000);
    expect(record.status, await logOf(stack.apiUrl, id)).toBe("succeeded");
    expect(record.attempts).toBeGreaterThanOrEqual(2);
    expect(record.attemptErrors?.length).toBe(record.attempts - 1);
    expect(record.attemptErrors?.[0]).toMatchObject({ attempt: 1, code: "SOURCE_FETCH_FAILED" });
    expect(record.attemptErrors?.[0]?.message).toMatch(/ECONNREFUSED|refused|unreachable/i);
    expect(await terminalEvents(stack.apiUrl, id)).toEqual(["succeeded"]);
  });

  it("a permanent failure (missing Dockerfile) fails at once: one attempt, its error recorded", async () => {
    const id = await submit(stack.apiUrl, { ...sleeperConfig(`permanent-${run}`, 0), dockerfile: "missing/Dockerfile" });
    const record = await waitFor(stack.apiUrl, id, isTerminal, 60_000);
    expect(record.status).toBe("failed");
    expect(record.error?.code).toBe("DOCKERFILE_NOT_FOUND");
    expect(record.attempts).toBe(1);
    expect(record.attemptErrors).toMatchObject([{ attempt: 1, code: "DOCKERFILE_NOT_FOUND" }]);
  });
});

describe("graceful shutdown", () => {
  let stack: RunningStack;
  beforeAll(async () => {
    stack = await startStack({ concurrency: 1, workerEnv: { WORKER_ID: `w1-${run}`, WORKER_SHUTDOWN_GRACE_SECONDS: "2" } });
  });
  afterAll(async () => stack?.stop());

  const exited = (child: RunningStack["workers"][number]) =>
    new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once("exit", (code) => resolve(code))));

  it("SIGTERM past the grace period requeues the running build; another worker finishes it; one final answer", async () => {
    const id = await submit(stack.apiUrl, sleeperConfig(`requeue-${run}`, 8));
    await waitFor(stack.apiUrl, id, (record) => record.status === "building", 60_000);
    const first = stack.workers[0]!;
    first.kill("SIGTERM");
    expect(await exited(first)).toBe(0);
    const requeued = await getRecord(stack.apiUrl, id);
    expect(requeued.status).toBe("queued");

    stack.startWorker({ WORKER_ID: `w2-${run}` });
    const record = await waitFor(stack.apiUrl, id, isTerminal, 120_000);
    expect(record.status, await logOf(stack.apiUrl, id)).toBe("succeeded");
    expect(record.worker).toBe(`w2-${run}`);
    expect(record.error).toBeUndefined();
    expect(await terminalEvents(stack.apiUrl, id)).toEqual(["succeeded"]);
    expect(await logOf(stack.apiUrl, id)).toContain("requeued for another worker");
  });

  it("SIGTERM within the grace period lets the running build finish on the same worker", async () => {
    const worker = stack.startWorker({ WORKER_ID: `w3-${run}`, WORKER_SHUTDOWN_GRACE_SECONDS: "60" });
    // the w2 worker from the previous test is still up: stop it so w3 takes the build
    const previous = stack.workers[1]!;
    previous.kill("SIGTERM");
    await exited(previous);
    const id = await submit(stack.apiUrl, sleeperConfig(`finish-${run}`, 3));
    await waitFor(stack.apiUrl, id, (record) => record.status === "building", 60_000);
    worker.kill("SIGTERM");
    expect(await exited(worker)).toBe(0);
    const record = await getRecord(stack.apiUrl, id);
    expect(record.status).toBe("succeeded");
    expect(record.worker).toBe(`w3-${run}`);
  });
});
