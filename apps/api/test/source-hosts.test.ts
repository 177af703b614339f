import { BuildStore, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import { buildTestApi, type TestApi } from "./helper.js";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";

// A source host refused by its spelling alone needs no DNS: the API refuses it with 400 naming
// `source`, through the workers' own policy code and allowlist, and nothing is enqueued.
const BASE = { service: "dockerhub", repository: "team/project" };

let queue: Queue<BuildJobData>;
let store: BuildStore;
let app: FastifyInstance;

let api: TestApi;
beforeAll(async () => {
  // as an operator would set SOURCE_HOST_ALLOWLIST for a company git server on a private address
  api = await buildTestApi({ name: "api-source-hosts", sources: { allowHttp: true, allowDir: false, sourceHosts: { hostAllowlist: ["10.20.30.40", "git.internal.example"] } } });
  ({ queue, store, app } = api);
});

beforeEach(() => api.reset());

afterAll(() => api?.close());

const post = (source: string) => app.inject({ method: "POST", url: "/builds", headers: { "content-type": "application/json" }, payload: JSON.stringify({ ...BASE, source }) });

describe("POST /builds refuses forbidden source hosts before enqueueing", () => {
  it.each([
    ["the metadata address", "http://169.254.169.254/latest/meta-data/", /cloud metadata address/],
    ["the metadata address as one decimal number", "http://2852039166/x.git", /cloud metadata address/],
    ["the metadata address inside IPv4-mapped IPv6", "http://[::ffff:169.254.169.254]/x.git", /cloud metadata address/],
    ["the metadata address in hex", "http://0xa9.0xfe.0xa9.0xfe/x.git", /cloud metadata address/],
    ["the IPv6 metadata address", "http://[fd00:ec2::254]/x.git", /cloud metadata address/],
    ["a metadata name", "http://metadata.google.internal/computeMetadata/v1/", /cloud metadata service/],
    ["localhost", "https://localhost/team/project.git", /loopback name/],
    ["a loopback address in short form", "https://127.1/team/project.git#main", /loopback address/],
    ["IPv6 loopback", "https://[::1]/team/project.git", /loopback address/],
    ["a private address", "https://192.168.1.10/team/project.git", /private address/],
    ["a link-local address", "https://169.254.10.10/team/project.git", /link-local address/],
  ])("%s (%s)", async (_label, source, why) => {
    const response = await post(source);
    expect(response.statusCode).toBe(400);
    const { error } = response.json() as { error: { code: string; message: string; issues: Array<{ field: string; message: string }> } };
    expect(error.code).toBe("SOURCE_NOT_ALLOWED");
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]?.field).toBe("source");
    expect(error.issues[0]?.message).toMatch(why);
    expect(error.message).toMatch(/^source: /);
    expect(await queue.count()).toBe(0);
    expect(await store.list({ limit: 10 })).toEqual([]);
  });
});

describe("POST /builds lets through what the workers would let through", () => {
  it.each([
    ["a public host name (the worker resolves and checks it)", "https://git.example.com/team/project.git"],
    ["an allowlisted private address", "http://10.20.30.40/team/project.git#main"],
    ["an allowlisted host name", "https://git.internal.example/team/project.git"],
  ])("%s", async (_label, source) => {
    const response = await post(source);
    expect(response.statusCode, response.body).toBe(202);
    expect(await queue.count()).toBe(1);
  });
});
