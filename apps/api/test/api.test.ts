import { loadCatalog } from "@m1l0/catalog";
import { BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import { randomUUID } from "node:crypto";
import { buildTestApi, type TestApi } from "./helper.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Authenticator, BuildService, buildApp } from "../src/index.js";

let queueName: string;
let prefix: string;

const VALID_YAML = `service: dockerhub
repository: m1l0/mnist
source: https://git.example.com/me/mnist.git
revision: v1
framework: python
pyversion: "3.11"
tags: [{Key: Project, Value: mnist}]
ignores: ['*.md', data]
`;

let queue: Queue<BuildJobData>;
let store: BuildStore;
let app: FastifyInstance;

async function jobCount(): Promise<number> {
  return queue.count();
}

let api: TestApi;
beforeAll(async () => {
  api = await buildTestApi({ name: "api" });
  ({ queue, store, app, queueName, prefix } = api);
});

afterAll(() => api?.close());

describe("POST /builds", () => {
  it("accepts a YAML config, records it and enqueues exactly its id and config", async () => {
    const before = await jobCount();
    const response = await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml" }, payload: VALID_YAML });
    expect(response.statusCode).toBe(202);
    const body = response.json();
    expect(body).toMatchObject({ status: "queued", links: { self: `/builds/${body.id}` } });
    expect(body.id).toMatch(/^bld_/);
    expect(await jobCount()).toBe(before + 1);
    const job = await queue.getJob(body.id);
    expect(Object.keys(job!.data).sort()).toEqual(["buildId", "config"]);
    expect(job!.data.config).toMatchObject({ repository: "m1l0/mnist", revision: "v1", tags: [{ Key: "Project", Value: "mnist" }] });
    const record = await app.inject({ method: "GET", url: `/builds/${body.id}` });
    expect(record.statusCode).toBe(200);
    expect(record.json()).toMatchObject({ id: body.id, status: "queued", config: { source: "https://git.example.com/me/mnist.git" } });
  });

  it("accepts the same config as JSON", async () => {
    const response = await app.inject({
      method: "POST",
      url: "/builds",
      payload: { service: "dockerhub", repository: "m1l0/mnist", source: "https://git.example.com/me/mnist.git" },
    });
    expect(response.statusCode).toBe(202);
  });

  it.each([
    ["missing required fields", { framework: "python" }, ["repository", "service", "source"]],
    ["unknown and mistyped fields", { service: "dockerhub", repository: "m1l0/mnist", source: "https://x.org/a.git", colour: "red", tags: "x" }, ["colour", "tags"]],
    ["a bad repository name", { service: "dockerhub", repository: "M1L0/Mnist", source: "https://x.org/a.git" }, ["repository"]],
  ])("rejects %s naming every field, and enqueues nothing", async (_label, payload, fields) => {
    const before = await jobCount();
    const response = await app.inject({ method: "POST", url: "/builds", payload });
    expect(response.statusCode).toBe(400);
    const { error } = response.json();
    expect(error.code).toBe("VALIDATION_FAILED");
    expect(error.issues.map((issue: { field: string }) => issue.field).sort()).toEqual(fields);
    expect(await jobCount()).toBe(before);
  });

  it("rejects an unsupported framework combination with what is supported", async () => {
    const before = await jobCount();
    const response = await app.inject({
      method: "POST",
      url: "/builds",
      payload: { service: "dockerhub", repository: "m1l0/mnist", source: "https://x.org/a.git", framework: "tensorflow", version: "0.1.0" },
    });
    expect(response.statusCode).toBe(400);
    expect(response.json().error.code).toBe("UNSUPPORTED_BASE");
    expect(response.json().error.message).toMatch(/2\.6\.0/);
    expect(await jobCount()).toBe(before);
  });

  it("refuses http sources unless the operator allows them", async () => {
    const before = await jobCount();
    const response = await app.inject({ method: "POST", url: "/builds", payload: { service: "dockerhub", repository: "m1l0/mnist", source: "http://x.org/a.git" } });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toMatchObject({ code: "SOURCE_NOT_ALLOWED", issues: [{ field: "source" }] });
    expect(await jobCount()).toBe(before);
  });

  it("rejects malformed YAML and oversize bodies clearly", async () => {
    const bad = await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml" }, payload: "service: [oops" });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.message).toMatch(/YAML/);
    const huge = await app.inject({ method: "POST", url: "/builds", payload: { service: "dockerhub", repository: "m1l0/mnist", source: "https://x.org/a.git", name: "x".repeat(300_000) } });
    expect(huge.statusCode).toBe(413);
  });
});

describe("reading builds", () => {
  it("404s an unknown build", async () => {
    const response = await app.inject({ method: "GET", url: "/builds/bld_nope" });
    expect(response.statusCode).toBe(404);
    expect(response.json().error.code).toBe("NOT_FOUND");
  });

  it("lists builds filtered by status and validates the filter", async () => {
    const created = (await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml" }, payload: VALID_YAML })).json();
    await store.transition(created.id, "failed", { error: { code: "BUILD_FAILED", message: "x" } });
    const failed = (await app.inject({ method: "GET", url: "/builds?status=failed" })).json();
    expect(failed.builds.map((b: { id: string }) => b.id)).toContain(created.id);
    const queued = (await app.inject({ method: "GET", url: "/builds?status=queued" })).json();
    expect(queued.builds.map((b: { id: string }) => b.id)).not.toContain(created.id);
    expect((await app.inject({ method: "GET", url: "/builds?status=nope" })).statusCode).toBe(400);
  });

  it("serves the log so far as text and as an event stream that ends with the build", async () => {
    const created = (await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml" }, payload: VALID_YAML })).json();
    await store.appendLog(created.id, "build", "Step 1/7 : FROM python");
    const text = await app.inject({ method: "GET", url: `/builds/${created.id}/logs` });
    expect(text.headers["content-type"]).toMatch(/text\/plain/);
    expect(text.body).toMatch(/\[build\] Step 1\/7 : FROM python/);
    await store.transition(created.id, "succeeded");
    const sse = await app.inject({ method: "GET", url: `/builds/${created.id}/logs?follow=1` });
    expect(sse.headers["content-type"]).toBe("text/event-stream");
    const events = sse.body.split("\n\n").filter((frame) => frame.includes("data: {\"type\""));
    expect(events.length).toBe(3); // queued, the log line, succeeded
    expect(sse.body).toMatch(/event: end/);
  });

  it("reports health and readiness", async () => {
    expect((await app.inject({ method: "GET", url: "/healthz" })).statusCode).toBe(200);
    expect((await app.inject({ method: "GET", url: "/readyz" })).json()).toEqual({ status: "ready" });
  });
});

describe("when Redis is unreachable", () => {
  it("fails fast with 503 and a clear error instead of hanging", async () => {
    const deadRedis = createRedis("redis://127.0.0.1:1", "producer");
    deadRedis.on("error", () => undefined);
    const deadQueue = new Queue<BuildJobData>(queueName, { connection: deadRedis });
    deadQueue.on("error", () => undefined);
    const deadStore = new BuildStore(deadRedis, prefix);
    const deadApp = await buildApp({ auth: Authenticator.disabled(), builds: new BuildService(deadStore, deadQueue, loadCatalog(), { allowHttp: false, allowDir: false }), store: deadStore, redis: deadRedis });
    const started = Date.now();
    const response = await deadApp.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml" }, payload: VALID_YAML });
    expect(response.statusCode).toBe(503);
    expect(response.json().error.code).toBe("QUEUE_UNAVAILABLE");
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await deadApp.inject({ method: "GET", url: "/readyz" })).statusCode).toBe(503);
    await deadApp.close();
    deadRedis.disconnect();
  });
});

describe("Idempotency-Key", () => {
  it("returns the original build for a repeated POST and enqueues it once", async () => {
    const key = `order-${randomUUID()}`;
    const before = await jobCount();
    const first = await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml", "idempotency-key": key }, payload: VALID_YAML });
    const second = await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml", "idempotency-key": key }, payload: VALID_YAML });
    expect(first.statusCode).toBe(202);
    expect(second.statusCode).toBe(200);
    expect(second.json().id).toBe(first.json().id);
    expect(await jobCount()).toBe(before + 1);
    const other = await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml", "idempotency-key": `other-${key}` }, payload: VALID_YAML });
    expect(other.json().id).not.toBe(first.json().id);
  });

  it("refuses a reused key with a different config, naming the header", async () => {
    const key = `order-${randomUUID()}`;
    await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml", "idempotency-key": key }, payload: VALID_YAML });
    const changed = await app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/yaml", "idempotency-key": key }, payload: VALID_YAML.replace("revision: v1", "revision: v2") });
    expect(changed.statusCode).toBe(409);
    expect(changed.json().error).toMatchObject({ code: "CONFLICT", issues: [{ field: "Idempotency-Key" }] });
  });
});
