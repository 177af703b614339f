import { loadCatalog } from "@m1l0/catalog";
import { BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Authenticator, BuildService, buildApp } from "../src/index.js";

// A source host refused by its spelling alone needs no DNS: the API refuses it with 400 naming
// `source`, through the workers' own policy code and allowlist, and nothing is enqueued.
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const queueName = `test-api-source-hosts-${randomUUID()}`;
const prefix = `test:${randomUUID()}:`;
const BASE = { service: "dockerhub", repository: "team/project" };

let redis: Redis;
let queue: Queue<BuildJobData>;
let store: BuildStore;
let app: FastifyInstance;

beforeAll(async () => {
  redis = createRedis(REDIS_URL, "producer");
  queue = new Queue<BuildJobData>(queueName, { connection: redis });
  store = new BuildStore(redis, prefix);
  // as an operator would set SOURCE_HOST_ALLOWLIST for a company git server on a private address
  const builds = new BuildService(store, queue, loadCatalog(), { allowHttp: true, allowDir: false, sourceHosts: { hostAllowlist: ["10.20.30.40", "git.internal.example"] } });
  app = await buildApp({ auth: Authenticator.disabled(), builds, store, redis });
});

beforeEach(async () => {
  await queue.obliterate({ force: true });
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
});

afterAll(async () => {
  await app.close();
  await queue.obliterate({ force: true });
  await queue.close();
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

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
