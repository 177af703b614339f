import * as grpc from "@grpc/grpc-js";
import { healthServiceDefinition, imageBuilderServiceDefinition, loadProtoDefinitions } from "@m1l0/proto";
import type { BuildStore } from "@m1l0/queue";
import type { FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Authenticator, BuildHistory, SubmissionRateLimiter, buildApp, startGrpcServer, type BuildService, type RunningGrpcServer } from "../src/index.js";
import { authTokens, bearer, buildTestApi, redisText, type TestApi } from "./helper.js";

// The rate limit shared by REST replicas and gRPC, and token checks on every gRPC method
// (the REST side of authentication is auth.test.ts).
const CONFIG = { service: "dockerhub", repository: "m1l0/auth", source: "https://git.example.com/me/auth.git" };
const { admin, alice, bob, carol, all: ALL_TOKENS } = authTokens();

let redis: Redis;
let store: BuildStore;
let builds: BuildService;
let prefix: string;
let api: TestApi;
beforeAll(async () => {
  api = await buildTestApi({ name: "auth-grpc" });
  ({ redis, store, builds, prefix } = api);
});

afterAll(() => api?.close());

// each submission its own build (identical requests in flight would attach to one build)
let submissions = 0;
const distinctConfig = () => ({ ...CONFIG, revision: `r${++submissions}` });

describe("per-token submission rate limit (Redis, shared by replicas and by gRPC)", () => {
  const limitPrefix = `test:${randomUUID()}:`;
  let limited: FastifyInstance[];
  let grpcServer: RunningGrpcServer;
  let limiter: SubmissionRateLimiter;

  beforeAll(async () => {
    const auth = Authenticator.withTokens(ALL_TOKENS.map((t) => t.entry));
    limiter = new SubmissionRateLimiter(redis, limitPrefix, { max: 2, windowMs: 1_500 });
    // two "replicas" over one Redis, each with its own limiter instance
    limited = await Promise.all(
      [0, 1].map(() => buildApp({ auth, rateLimiter: new SubmissionRateLimiter(redis, limitPrefix, limiter.settings), builds, store, redis })),
    );
    grpcServer = await startGrpcServer({ builds, history: new BuildHistory(store, undefined), redis, auth, rateLimiter: limiter, host: "127.0.0.1", port: 0, logger: { info: () => undefined, error: () => undefined } });
  });

  afterAll(async () => {
    for (const instance of limited ?? []) await instance.close();
    await grpcServer?.close();
    const keys = await redis.keys(`${limitPrefix}*`);
    if (keys.length) await redis.del(...keys);
  });

  const post = (instance: FastifyInstance, t: { token: string }) => instance.inject({ method: "POST", url: "/builds", headers: bearer(t), payload: distinctConfig() });

  it("answers 429 RATE_LIMITED with Retry-After once a token's budget is spent, on any replica, and resets after the window", async () => {
    const [a, b] = limited as [FastifyInstance, FastifyInstance];
    const first = await post(a, carol);
    expect(first.statusCode).toBe(202);
    expect(first.headers["x-ratelimit-limit"]).toBe("2");
    expect((await post(b, carol)).statusCode).toBe(202);
    const refused = await post(a, carol);
    expect(refused.statusCode).toBe(429);
    expect(refused.json().error.code).toBe("RATE_LIMITED");
    expect(refused.json().error.message).toMatch(/2 per 1.5 s/);
    expect(Number(refused.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect((await post(b, carol)).statusCode).toBe(429);
    // another token has its own budget
    expect((await post(a, bob)).statusCode).toBe(202);
    // reads are not limited
    expect((await a.inject({ method: "GET", url: "/builds", headers: bearer(carol) })).statusCode).toBe(200);
    // the counter lives in Redis under the token's name, not the token
    expect(await redis.get(limiter.key("carol"))).toBe("4");
    await new Promise((resolve) => setTimeout(resolve, 1_600));
    expect((await post(b, carol)).statusCode).toBe(202);
  });

  it("gRPC Build draws from the same budget: RESOURCE_EXHAUSTED with a retry-after trailer", async () => {
    await new Promise((resolve) => setTimeout(resolve, 1_600));
    const [a] = limited as [FastifyInstance];
    expect((await post(a, alice)).statusCode).toBe(202);
    expect((await post(a, alice)).statusCode).toBe(202);
    const client = imageBuilderClient(grpcServer.address);
    try {
      const error = await firstError(client.Build!({ id: `rl-${randomUUID()}`, config: CONFIG }, metadataFor(alice.token)));
      expect(error.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(error.metadata.get("m1l0-error-code")).toEqual(["RATE_LIMITED"]);
      expect(Number(error.metadata.get("retry-after")[0])).toBeGreaterThanOrEqual(1);
    } finally {
      client.close();
    }
  });
});

type StreamClient = grpc.Client & Record<string, (request: unknown, metadata?: grpc.Metadata) => grpc.ClientReadableStream<{ body: string }>>;
type UnaryClient = grpc.Client & Record<string, (request: unknown, metadata: grpc.Metadata, callback: (error: grpc.ServiceError | null, response?: unknown) => void) => void>;

function imageBuilderClient(address: string): StreamClient & UnaryClient {
  const Client = grpc.makeGenericClientConstructor(imageBuilderServiceDefinition(), "ImageBuilderService");
  return new Client(address, grpc.credentials.createInsecure()) as unknown as StreamClient & UnaryClient;
}

function metadataFor(tokenOrHeader: string | undefined, raw = false): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (tokenOrHeader !== undefined) metadata.set("authorization", raw ? tokenOrHeader : `Bearer ${tokenOrHeader}`);
  return metadata;
}

/** The status a server-streaming call ends with (its first message also counts as "no error"). */
function firstError(stream: grpc.ClientReadableStream<unknown>): Promise<grpc.ServiceError> {
  return new Promise((resolve, reject) => {
    stream.on("data", () => undefined);
    stream.on("error", resolve);
    stream.on("end", () => reject(new Error("the call ended without an error")));
  });
}

/** Calls any method (unary or server-streaming) and resolves with the status it ended with, or "data" if it answered. */
function callMethod(client: StreamClient & UnaryClient, method: grpc.MethodDefinition<unknown, unknown>, name: string, request: unknown, metadata: grpc.Metadata): Promise<grpc.status | "data"> {
  return new Promise((resolve) => {
    if (method.responseStream) {
      const stream = client[name]!(request, metadata) as grpc.ClientReadableStream<unknown>;
      stream.on("data", () => {
        stream.cancel();
        resolve("data");
      });
      stream.on("error", (error: grpc.ServiceError) => resolve(error.code));
      stream.on("end", () => resolve(grpc.status.OK));
    } else {
      (client[name] as UnaryClient[string])(request, metadata, (error) => resolve(error ? error.code : "data"));
    }
  });
}

describe("gRPC: every ImageBuilderService method needs a token; health stays open", () => {
  let server: RunningGrpcServer;
  let client: StreamClient & UnaryClient;
  const definition = imageBuilderServiceDefinition(loadProtoDefinitions());

  beforeAll(async () => {
    server = await startGrpcServer({ builds, history: new BuildHistory(store, undefined), redis, auth: Authenticator.withTokens(ALL_TOKENS.map((t) => t.entry)), host: "127.0.0.1", port: 0, logger: { info: () => undefined, error: () => undefined } });
    client = imageBuilderClient(server.address);
  });

  afterAll(async () => {
    client?.close();
    await server?.close();
  });

  it.each([
    ["no metadata", undefined, false],
    ["a wrong token", "m1l0_wrong", false],
    ["another scheme", "Basic Zm9vOmJhcg==", true],
    ["a bare scheme", "Bearer", true],
  ] as const)("answers UNAUTHENTICATED to every method with %s, before any work", async (_label, value, raw) => {
    const names = Object.keys(definition);
    expect(names.sort()).toEqual(["Build", "Find", "Push"]);
    for (const name of names) {
      const id = `unauth-${name}-${randomUUID()}`;
      const code = await callMethod(client, definition[name] as grpc.MethodDefinition<unknown, unknown>, name, { id, config: CONFIG }, metadataFor(value, raw));
      expect(code, name).toBe(grpc.status.UNAUTHENTICATED);
      expect(await store.get(id)).toBeUndefined();
    }
  });

  it("serves grpc.health.v1.Health without a token", async () => {
    const Health = grpc.makeGenericClientConstructor(healthServiceDefinition(), "Health");
    const health = new Health(server.address, grpc.credentials.createInsecure()) as unknown as UnaryClient;
    try {
      const answer = await new Promise((resolve, reject) => health.Check!({ service: "" }, new grpc.Metadata(), (error, response) => (error ? reject(error) : resolve(response))));
      expect(answer).toEqual({ status: "SERVING" });
    } finally {
      health.close();
    }
  });

  it("scopes Build, Push and Find by owner: another user's id is NOT_FOUND (ALREADY_EXISTS on Build), an admin's is visible", async () => {
    const id = `owned-${randomUUID()}`;
    // alice's Build enqueues and then follows the build (no worker here): the first line never comes, so stop following
    const stream = client.Build!({ id, config: CONFIG }, metadataFor(alice.token));
    stream.on("error", () => undefined);
    stream.on("data", () => undefined);
    for (let i = 0; i < 50 && !(await store.get(id)); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    stream.cancel();
    expect((await store.require(id)).submitter).toBe("alice");

    const find = (t: { token: string }) => callMethod(client, definition.Find as grpc.MethodDefinition<unknown, unknown>, "Find", { id }, metadataFor(t.token));
    const push = (t: { token: string }) => callMethod(client, definition.Push as grpc.MethodDefinition<unknown, unknown>, "Push", { id }, metadataFor(t.token));
    expect(await find(bob)).toBe(grpc.status.NOT_FOUND);
    expect(await push(bob)).toBe(grpc.status.NOT_FOUND);
    expect(await callMethod(client, definition.Build as grpc.MethodDefinition<unknown, unknown>, "Build", { id, config: CONFIG }, metadataFor(bob.token))).toBe(grpc.status.ALREADY_EXISTS);
    // not finished yet: the owner and an admin are told so
    expect(await find(alice)).toBe(grpc.status.FAILED_PRECONDITION);
    expect(await find(admin)).toBe(grpc.status.FAILED_PRECONDITION);
  });
});

describe("tokens never stored (gRPC)", () => {
  it("appear in no Redis key or value", async () => {
    const texts = await redisText(redis, prefix);
    expect(texts.length).toBeGreaterThan(0);
    for (const text of texts) for (const t of ALL_TOKENS) expect(text).not.toContain(t.token);
  });
});
