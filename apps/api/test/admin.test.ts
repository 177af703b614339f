import { buildConfigSchema, type BuildRecord } from "@m1l0/config";
import { LocalArtifactStore, archiveRecord, artifactKeys } from "@m1l0/storage";
import type { FastifyInstance } from "fastify";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { buildTestApi, type TestApi } from "./helper.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";

let queueName: string;
const artifactsDir = mkdtempSync(path.join(tmpdir(), "m1l0-admin-test-"));
const artifacts = new LocalArtifactStore(artifactsDir);

let app: FastifyInstance;

function archivedRecord(id: string, createdAt: string, status: BuildRecord["status"] = "succeeded"): BuildRecord {
  return {
    id,
    status,
    config: buildConfigSchema.parse({ service: "dockerhub", repository: "m1l0/old", source: "https://git.example.com/old.git" }),
    createdAt,
    updatedAt: createdAt,
    timestamps: { queued: createdAt, [status]: createdAt },
    attempts: 1,
  };
}

/** Parses the Prometheus text format into `name{labels}` → value. */
function parseMetrics(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!match) throw new Error(`not a Prometheus sample line: ${line}`);
    samples.set(match[1]!, Number(match[2]));
  }
  return samples;
}

let api: TestApi;
beforeAll(async () => {
  api = await buildTestApi({ name: "admin", app: ({ queue }) => ({ queue, artifacts }) });
  ({ app, queueName } = api);
});

afterAll(async () => {
  await api?.close();
  rmSync(artifactsDir, { recursive: true, force: true });
});

describe("OpenAPI", () => {
  it("documents POST /builds with exactly the BuildConfig zod schema, and serves the UI at /docs", async () => {
    const response = await app.inject({ method: "GET", url: "/docs/json" });
    expect(response.statusCode).toBe(200);
    const document = response.json();
    expect(document.openapi).toMatch(/^3\./);
    const body = document.paths["/builds"].post.requestBody.content["application/json"].schema;
    const expected = z.toJSONSchema(buildConfigSchema, { io: "input", target: "openapi-3.0" }) as Record<string, unknown>;
    expect(body.properties).toEqual(expected.properties);
    expect(body.required).toEqual(expected.required);
    expect(body.additionalProperties).toBe(false);
    expect(Object.keys(document.paths)).toEqual(expect.arrayContaining(["/builds", "/builds/{id}", "/builds/{id}/logs"]));
    expect(Object.keys(document.paths).some((p) => p.startsWith("/admin") || p.startsWith("/docs"))).toBe(false);

    const ui = await app.inject({ method: "GET", url: "/docs/" });
    expect(ui.statusCode).toBe(200);
    expect(ui.body).toContain("swagger");
  });

  it("keeps the service's own validation errors (the schema documents, the zod parse validates)", async () => {
    const response = await app.inject({ method: "POST", url: "/builds", payload: { framework: "python" } });
    expect(response.statusCode).toBe(400);
    expect(response.json().error.issues.map((issue: { field: string }) => issue.field)).toEqual(expect.arrayContaining(["service", "repository", "source"]));
  });
});

describe("/metrics", () => {
  it("reports queue depth by state and recent builds by status, and moves when a build is queued", async () => {
    const before = parseMetrics((await app.inject({ method: "GET", url: "/metrics" })).body);
    expect(before.get('m1l0_queue_jobs{state="waiting"}')).toBe(0);
    const submitted = await app.inject({
      method: "POST",
      url: "/builds",
      payload: { service: "dockerhub", repository: "m1l0/metrics", source: "https://git.example.com/m.git" },
    });
    expect(submitted.statusCode).toBe(202);
    const response = await app.inject({ method: "GET", url: "/metrics" });
    expect(response.headers["content-type"]).toContain("text/plain");
    const after = parseMetrics(response.body);
    expect(after.get('m1l0_queue_jobs{state="waiting"}')).toBe(1);
    expect(after.get('m1l0_builds_recent{status="queued"}')).toBe((before.get('m1l0_builds_recent{status="queued"}') ?? 0) + 1);
  });
});

describe("dashboard", () => {
  it("serves bull-board at /admin/queues and its API lists the build queue", async () => {
    const page = await app.inject({ method: "GET", url: "/admin/queues" });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain("<html");
    const queues = await app.inject({ method: "GET", url: "/admin/queues/api/queues" });
    expect(queues.statusCode).toBe(200);
    expect(queues.json().queues.map((q: { name: string }) => q.name)).toContain(queueName);
  });
});

describe("history beyond Redis retention", () => {
  it("GET /builds and GET /builds/:id fall back to archived records, newest first", async () => {
    const older = archivedRecord(`bld_old_${randomUUID().slice(0, 8)}`, "2001-01-01T00:00:00.000Z");
    const newer = archivedRecord(`bld_new_${randomUUID().slice(0, 8)}`, "2001-01-02T00:00:00.000Z", "failed");
    // as the worker archives them: the record and its newest-first index keys
    await archiveRecord(artifacts, older);
    await archiveRecord(artifacts, newer);

    const list = (await app.inject({ method: "GET", url: "/builds?limit=500" })).json().builds as BuildRecord[];
    const ids = list.map((record) => record.id);
    expect(ids).toContain(older.id);
    expect(ids.indexOf(newer.id)).toBeLessThan(ids.indexOf(older.id));
    const failedOnly = (await app.inject({ method: "GET", url: "/builds?status=failed" })).json().builds as BuildRecord[];
    expect(failedOnly.map((record) => record.id)).toEqual([newer.id]);

    const one = await app.inject({ method: "GET", url: `/builds/${older.id}` });
    expect(one.statusCode).toBe(200);
    expect(one.json()).toMatchObject({ id: older.id, status: "succeeded" });
    expect((await app.inject({ method: "GET", url: "/builds/bld_never_existed" })).statusCode).toBe(404);
  });

  it("serves the archived log, as text and as SSE, once the Redis stream is gone", async () => {
    const record = archivedRecord(`bld_log_${randomUUID().slice(0, 8)}`, "2001-01-03T00:00:00.000Z");
    const log = ["2001-01-03T00:00:00.000Z [status] queued", "2001-01-03T00:00:01.000Z [build] Step 1/2 : FROM x", "2001-01-03T00:00:02.000Z [status] succeeded: r@sha256:1"].join("\n") + "\n";
    await artifacts.put(artifactKeys.record(record.id), JSON.stringify(record));
    await artifacts.put(artifactKeys.log(record.id), log);

    const plain = await app.inject({ method: "GET", url: `/builds/${record.id}/logs` });
    expect(plain.statusCode).toBe(200);
    expect(plain.body).toBe(log);

    const sse = await app.inject({ method: "GET", url: `/builds/${record.id}/logs?follow=1`, headers: { "last-event-id": "archived-1" } });
    const events = sse.body.split("\n\n").filter(Boolean);
    expect(events[0]).toContain("id: archived-2");
    expect(events[0]).toContain('"line":"Step 1/2 : FROM x"');
    expect(events[1]).toContain('"status":"succeeded"');
    expect(events[2]).toContain("event: end");
  });
});
