import type { BuildConfigInput } from "@m1l0/config";
import { M1l0ApiError, M1l0Client, type WatchedEvent } from "@m1l0/sdk";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ROOT_DIR, createGitFixture, services, startStack, type RunningStack } from "../src/index.js";

const mnistText = readFileSync(path.join(ROOT_DIR, "examples/mnist/m1l0.yaml"), "utf8");
const mnistConfig = parse(mnistText) as Record<string, unknown>;
const run = Date.now().toString(36);

let stack: RunningStack;
let artifactsDir: string | undefined;
let client: M1l0Client;
/** the build of the first test, reused to check resuming on a finished event stream */
let finishedBuildId: string | undefined;

async function collect(events: AsyncIterable<WatchedEvent>): Promise<WatchedEvent[]> {
  const items: WatchedEvent[] = [];
  for await (const item of events) items.push(item);
  return items;
}

beforeAll(async () => {
  // its own archive folder: the history it pages through holds this stack's builds only
  artifactsDir = mkdtempSync(path.join(tmpdir(), "m1l0-e2e-artifacts-"));
  stack = await startStack({ apiEnv: { ARTIFACTS_DIR: artifactsDir }, workerEnv: { ARTIFACTS_DIR: artifactsDir } });
  client = new M1l0Client({ baseUrl: stack.apiUrl, token: stack.token });
});

afterAll(async () => {
  await stack?.stop();
  if (artifactsDir) rmSync(artifactsDir, { recursive: true, force: true });
});

describe("SDK against the real stack", () => {
  it("submits YAML text, watches status changes and log lines live, and waits for the pushed image", async () => {
    const revision = `sdk-${run}`;
    const submitted = await client.submit(mnistText.replace(/^revision: .*$/m, `revision: ${revision}`));
    expect(submitted.id).toMatch(/^bld_/);
    expect(submitted.status).toBe("queued");
    finishedBuildId = submitted.id;

    const waiting = client.wait(submitted.id, { timeoutMs: 300_000 });
    const events = await collect(client.watch(submitted.id));
    const record = await waiting;

    const statuses = events.flatMap(({ event }) => (event.type === "status" ? [event.status] : []));
    expect(statuses, stack.logs.join("\n")).toEqual(["queued", "fetching", "building", "pushing", "succeeded"]);
    const last = events.at(-1)?.event;
    expect(last).toMatchObject({ type: "status", status: "succeeded" });
    // log lines of every phase arrive before the final status, each after its phase began
    const indexOf = (status: string) => events.findIndex(({ event }) => event.type === "status" && event.status === status);
    const buildStep = events.findIndex(({ event }) => event.type === "log" && /^Step \d+\/\d+ : /.test(event.line));
    const pushLine = events.findIndex(({ event }) => event.type === "log" && event.phase === "push");
    expect(buildStep).toBeGreaterThan(indexOf("building"));
    expect(buildStep).toBeLessThan(indexOf("pushing"));
    expect(pushLine).toBeGreaterThan(indexOf("pushing"));
    expect(pushLine).toBeLessThan(indexOf("succeeded"));
    // stream ids are unique and increasing
    const ids = events.map(({ id }) => id);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort((a, b) => (streamIdLess(a, b) ? -1 : 1))).toEqual(ids);

    expect(record).toMatchObject({ id: submitted.id, status: "succeeded" });
    expect(record.image?.reference).toBe(`${services.registryHost}/m1l0/mnist:${revision}`);
    expect(record.image?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect((last as { image?: { digest?: string } }).image?.digest).toBe(record.image?.digest);

    // the record may gain fields afterwards (e.g. artifact uploads), never lose these
    expect(await client.get(submitted.id)).toMatchObject({ id: record.id, status: "succeeded", image: record.image, commit: record.commit });
    expect((await client.list({ limit: 10 })).map((build) => build.id)).toContain(submitted.id);
    expect((await client.list({ status: "failed" })).map((build) => build.id)).not.toContain(submitted.id);
    expect(await client.logs(submitted.id)).toMatch(/\[push\] pushed .*@sha256:[0-9a-f]{64}/);
  });

  it("turns a rejected config into an M1l0ApiError naming every bad field", async () => {
    const error = await client.submit({ ...mnistConfig, repository: "Not A Repo", pyversion: 3.11, colour: "blue" } as never).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(M1l0ApiError);
    const apiError = error as M1l0ApiError;
    expect(apiError.status).toBe(400);
    expect(apiError.code).toBe("VALIDATION_FAILED");
    expect(apiError.issues.map((issue) => issue.field).sort()).toEqual(["colour", "pyversion", "repository"]);
    expect(apiError.issues.find((issue) => issue.field === "pyversion")?.message).toMatch(/quote it/);
  });

  it("cancels a running build, which ends cancelled; cancelling it again is a CONFLICT", async () => {
    const fixture = createGitFixture(path.join(ROOT_DIR, "examples/mnist"), { "Dockerfile.slow": `FROM ${services.baseImageBusybox}\nRUN sleep 120\n` });
    try {
      const { id } = await client.submit({ ...mnistConfig, source: fixture.url, dockerfile: "Dockerfile.slow", revision: `cancel-${run}` } as BuildConfigInput);
      for await (const { event } of client.watch(id)) {
        if (event.type === "log" && event.phase === "build" && /Running in/.test(event.line)) break; // the RUN step started
      }
      const requested = Date.now();
      expect(await client.cancel(id)).toMatchObject({ id, cancel: "signalled" });
      const record = await client.wait(id, { timeoutMs: 30_000 });
      expect(record.status).toBe("cancelled");
      expect(Date.now() - requested).toBeLessThan(10_000);
      await expect(client.cancel(id)).rejects.toMatchObject({ name: "M1l0ApiError", status: 409, code: "CONFLICT" });
    } finally {
      fixture.cleanup();
    }
  });

  it("pages through the builds with cursors: listPage and listAll see each build once, newest first", async () => {
    const everything = (await client.list({ limit: 500 })).map((build) => build.id);
    expect(everything.length, "needs the builds of the tests before").toBeGreaterThanOrEqual(2);
    const first = await client.listPage({ limit: 1 });
    expect(first.builds.map((build) => build.id)).toEqual(everything.slice(0, 1));
    expect(first.nextCursor).toEqual(expect.any(String));
    const second = await client.listPage({ limit: 1, cursor: first.nextCursor! });
    expect(second.builds.map((build) => build.id)).toEqual(everything.slice(1, 2));
    const paged: string[] = [];
    for await (const build of client.listAll({ limit: 1 })) paged.push(build.id);
    expect(paged).toEqual(everything);
    await expect(client.listPage({ cursor: "nonsense" })).rejects.toMatchObject({ status: 400, code: "VALIDATION_FAILED", issues: [{ field: "cursor" }] });
  });

  it("reports an unknown build as NOT_FOUND and an unreachable API as API_UNREACHABLE", async () => {
    await expect(client.get("bld_doesnotexist")).rejects.toMatchObject({ name: "M1l0ApiError", status: 404, code: "NOT_FOUND" });
    const anonymous = new M1l0Client({ baseUrl: stack.apiUrl });
    await expect(anonymous.list()).rejects.toMatchObject({ name: "M1l0ApiError", status: 401, code: "UNAUTHENTICATED", isUnauthenticated: true });
    // another user's build is as unknown as a missing one
    const other = new M1l0Client({ baseUrl: stack.apiUrl, token: stack.tokens.bob });
    if (finishedBuildId) await expect(other.get(finishedBuildId)).rejects.toMatchObject({ status: 404, code: "NOT_FOUND" });
    const nowhere = new M1l0Client({ baseUrl: "http://127.0.0.1:1" });
    await expect(nowhere.list()).rejects.toMatchObject({ status: 0, code: "API_UNREACHABLE" });
  });

  it("resumes from lastEventId, and after a dropped connection, without duplicates or gaps", async () => {
    expect(finishedBuildId, "needs the build of the first test").toBeDefined();
    const id = finishedBuildId!;
    const all = await collect(client.watch(id));
    expect(all.length).toBeGreaterThan(10);

    const middle = Math.floor(all.length / 2);
    const resumed = await collect(client.watch(id, { lastEventId: all[middle]!.id }));
    expect(resumed).toEqual(all.slice(middle + 1));

    // a connection that breaks mid-frame: the SDK reconnects with Last-Event-ID
    let followRequests = 0;
    const lastEventIds: Array<string | null> = [];
    const flakyFetch: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      if (!String(input).includes("follow=1")) return response;
      followRequests++;
      lastEventIds.push(new Headers(init?.headers).get("last-event-id"));
      if (followRequests > 1) return response;
      return new Response(cutAfter(response.body!, 1500), { status: response.status, headers: response.headers });
    };
    const flaky = new M1l0Client({ baseUrl: stack.apiUrl, token: stack.token, fetch: flakyFetch });
    const recovered = await collect(flaky.watch(id));
    expect(followRequests).toBe(2);
    expect(lastEventIds[0]).toBeNull();
    expect(lastEventIds[1]).toMatch(/^\d+-\d+$/);
    expect(recovered).toEqual(all);
  });
});

/** Passes `limit` bytes through, then fails the stream like a dropped TCP connection. */
function cutAfter(body: ReadableStream<Uint8Array>, limit: number): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let sent = 0;
  return new ReadableStream({
    async pull(controller) {
      if (sent >= limit) {
        await reader.cancel();
        controller.error(new TypeError("terminated: other side closed"));
        return;
      }
      const { value, done } = await reader.read();
      if (done) return controller.close();
      const chunk = value.subarray(0, limit - sent);
      sent += chunk.length;
      controller.enqueue(chunk);
    },
  });
}

function streamIdLess(a: string, b: string): boolean {
  const [aTime = 0, aSeq = 0] = a.split("-").map(Number);
  const [bTime = 0, bSeq = 0] = b.split("-").map(Number);
  return aTime < bTime || (aTime === bTime && aSeq < bSeq);
}
