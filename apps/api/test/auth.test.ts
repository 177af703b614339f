import { loadCatalog } from "@m1l0/catalog";
import { BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import type { FastifyInstance, InjectOptions } from "fastify";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { authTokens, bearer, buildTestApi, logCapture, redisText, type TestApi } from "./helper.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Authenticator, BuildService, DashboardSessions, SESSION_COOKIE, SubmissionRateLimiter, buildApp, registeredRoutes } from "../src/index.js";
import { authenticatorFromEnv } from "../src/auth/config.js";

let queueName: string;
let prefix: string;
const CONFIG = { service: "dockerhub", repository: "m1l0/auth", source: "https://git.example.com/me/auth.git" };

const { admin, alice, bob, all: ALL_TOKENS, lines: TOKEN_LINES } = authTokens();

let redis: Redis;
let queue: Queue<BuildJobData>;
let store: BuildStore;
let app: FastifyInstance;
let sessions: DashboardSessions;
const log = logCapture();
const logLines = log.lines;

const basic = (password: string, user = "x") => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}` });

let api: TestApi;
beforeAll(async () => {
  const auth = authenticatorFromEnv({ API_TOKENS: TOKEN_LINES, AUTH_DISABLED: false });
  api = await buildTestApi({
    name: "auth",
    app: (parts) => {
      sessions = new DashboardSessions(parts.redis, { prefix: parts.prefix, ttlSeconds: 600 });
      // the most verbose logging there is: requests with their headers must still not show a token
      return { auth, queue: parts.queue, sessions, logger: { level: "trace", stream: log.stream, redact: ["req.headers.authorization"] } };
    },
  });
  ({ redis, queue, store, app, queueName, prefix } = api);
});

afterAll(() => api?.close());

// each submission its own build (identical requests in flight would attach to one build)
let submissions = 0;
const distinctConfig = () => ({ ...CONFIG, revision: `r${++submissions}` });

async function submitAs(t: { token: string }, headers: Record<string, string> = {}, payload: Record<string, unknown> = distinctConfig()) {
  return app.inject({ method: "POST", url: "/builds", headers: { ...bearer(t), ...headers }, payload });
}

describe("operator configuration", () => {
  it("refuses to start without tokens unless AUTH_DISABLED=true, and refuses both at once", () => {
    expect(() => authenticatorFromEnv({ API_TOKENS: "", AUTH_DISABLED: false })).toThrow(/no API tokens configured/);
    expect(() => authenticatorFromEnv({ API_TOKENS: alice.line, AUTH_DISABLED: true })).toThrow(/AUTH_DISABLED=true while API tokens are configured/);
    expect(authenticatorFromEnv({ API_TOKENS: "", AUTH_DISABLED: true }).disabled).toBe(true);
  });

  it("reads hashed entries from a file plus inline ones, and never accepts a raw token as an entry", () => {
    const auth = authenticatorFromEnv({ API_TOKENS_FILE: "/tokens", API_TOKENS: bob.line, AUTH_DISABLED: false }, () => `# comment\n${alice.line}\n\n${admin.line}  # ops\n`);
    expect(auth.tokenCount).toBe(3);
    expect(auth.authenticate(`Bearer ${alice.token}`)).toEqual({ name: "alice", role: "user" });
    expect(auth.authenticate(`bearer ${admin.token}`)).toEqual({ name: "ops", role: "admin" });
    expect(() => authenticatorFromEnv({ API_TOKENS: `alice:user:${alice.token}`, AUTH_DISABLED: false })).toThrow(/the hash must be 64 hex characters/);
    expect(() => authenticatorFromEnv({ API_TOKENS: `${alice.line},${alice.line.replace("alice", "alias")}`, AUTH_DISABLED: false })).toThrow(/same token hash/);
    expect(() => authenticatorFromEnv({ API_TOKENS_FILE: "/missing", API_TOKENS: "", AUTH_DISABLED: false }, () => { throw Object.assign(new Error("x"), { code: "ENOENT" }); })).toThrow(/API_TOKENS_FILE: cannot read \/missing: ENOENT/);
    // an error message never repeats what it was given (it could be a pasted token)
    try {
      authenticatorFromEnv({ API_TOKENS: `alice:user:${alice.token}`, AUTH_DISABLED: false });
    } catch (error) {
      expect((error as Error).message).not.toContain(alice.token);
    }
  });
});

describe("REST: every route needs a token (table of every registered route)", () => {
  // the health endpoints, and the dashboard's sign-in and sign-out (how a browser gets a session)
  const OPEN = new Set(["GET /healthz", "HEAD /healthz", "GET /readyz", "HEAD /readyz", "GET /admin/login", "HEAD /admin/login", "POST /admin/login", "GET /admin/logout", "POST /admin/logout"]);
  const sampleUrl = (url: string) => url.replace(/:[A-Za-z_]+/g, "bld_sample").replace(/\*$/, "x");
  const requestsFor = (method: string, url: string): InjectOptions => ({
    method: method as InjectOptions["method"],
    url: sampleUrl(url),
    ...(method === "POST" || method === "PUT" || method === "PATCH" ? { payload: CONFIG } : {}),
  });

  it("covers the API, the dashboard, the docs and metrics, and opens only the health endpoints and the dashboard's sign-in", () => {
    const routes = registeredRoutes(app);
    const keys = routes.map((route) => `${route.method} ${route.url}`);
    expect(keys).toEqual(expect.arrayContaining(["POST /builds", "GET /builds", "GET /builds/:id", "DELETE /builds/:id", "GET /builds/:id/logs", "GET /metrics", "GET /docs/json", "GET /admin/queues", "GET /healthz", "GET /admin/login", "POST /admin/login"]));
    expect(routes.length).toBeGreaterThan(20);
    expect(new Set(routes.filter((route) => route.auth.access === "public").map((route) => `${route.method} ${route.url}`))).toEqual(OPEN);
    // Basic (browser) credentials only on GET pages, never on the build API, and no longer on the dashboard
    for (const route of routes.filter((r) => r.auth.allowBasic)) {
      expect(["GET", "HEAD"]).toContain(route.method);
      expect(route.url.startsWith("/admin")).toBe(false);
    }
    const dashboard = routes.filter((route) => route.url.startsWith("/admin/queues"));
    expect(dashboard.length).toBeGreaterThan(20);
    expect(dashboard.every((route) => route.auth.access === "admin")).toBe(true);
    // the session cookie: exactly the dashboard's GET/HEAD routes
    expect(routes.filter((route) => route.auth.allowSession).map((route) => `${route.method} ${route.url}`).sort()).toEqual(
      dashboard.filter((route) => route.method === "GET" || route.method === "HEAD").map((route) => `${route.method} ${route.url}`).sort(),
    );
  });

  it("a dashboard session cookie opens the dashboard's GET/HEAD routes and no other route", async () => {
    const cookie = `${SESSION_COOKIE}=${await sessions.create({ name: "ops", role: "admin" })}`;
    const routes = registeredRoutes(app).filter((route) => !OPEN.has(`${route.method} ${route.url}`));
    const failures: string[] = [];
    for (const route of routes) {
      const response = await app.inject({ ...requestsFor(route.method, route.url), headers: { cookie } });
      const opened = response.statusCode !== 401 && response.statusCode !== 403;
      if (opened !== route.auth.allowSession) failures.push(`${route.method} ${route.url} → ${response.statusCode} ${response.body.slice(0, 120)}`);
    }
    expect(failures).toEqual([]);
    expect(await queue.count()).toBe(0);
    // a user token's name in a session (impossible through the form) opens nothing either
    const forged = await sessions.create({ name: "ops", role: "admin" });
    await redis.set(sessions.key(forged), JSON.stringify({ name: "alice", role: "user" }), "KEEPTTL");
    const userCookie = `${SESSION_COOKIE}=${forged}`;
    expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { cookie: userCookie } })).statusCode).toBe(403);
  });

  it.each([
    ["no Authorization header", {}],
    ["an empty header", { authorization: "" }],
    ["a bare scheme", { authorization: "Bearer" }],
    ["another scheme", { authorization: "Token abc" }],
    ["a wrong token", { authorization: "Bearer m1l0_not-a-real-token" }],
    ["a token's hash instead of the token", { authorization: `Bearer ${alice.entry.sha256}` }],
  ])("answers 401 UNAUTHENTICATED on every non-health route with %s", async (_label, headers) => {
    const routes = registeredRoutes(app).filter((route) => !OPEN.has(`${route.method} ${route.url}`));
    const failures: string[] = [];
    for (const route of routes) {
      const response = await app.inject({ ...requestsFor(route.method, route.url), headers });
      const body = route.method === "HEAD" ? undefined : response.json();
      if (response.statusCode !== 401 || (body && body.error?.code !== "UNAUTHENTICATED") || !response.headers["www-authenticate"]) {
        failures.push(`${route.method} ${route.url} → ${response.statusCode} ${response.body.slice(0, 120)}`);
      }
    }
    expect(failures).toEqual([]);
    expect(await queue.count()).toBe(0);
  });

  it("keeps /healthz and /readyz open", async () => {
    expect((await app.inject({ method: "GET", url: "/healthz" })).statusCode).toBe(200);
    expect((await app.inject({ method: "GET", url: "/readyz" })).statusCode).toBe(200);
  });

  it("sends browsers to the sign-in form on the dashboard (no Basic there), asks for Basic on the docs, refuses Basic on the build API", async () => {
    const challenge = await app.inject({ method: "GET", url: "/admin/queues" });
    expect(challenge.statusCode).toBe(401);
    expect(challenge.headers["www-authenticate"]).toBe('Bearer realm="m1l0"');
    const browser = await app.inject({ method: "GET", url: "/admin/queues", headers: { accept: "text/html" } });
    expect(browser.statusCode).toBe(303);
    expect(browser.headers.location).toBe("/admin/login?next=%2Fadmin%2Fqueues");
    // a page whose URL carries user:pass@ cannot fetch() its own data: the dashboard does not take Basic
    expect((await app.inject({ method: "GET", url: "/admin/queues", headers: basic(admin.token) })).statusCode).toBe(401);
    const page = await app.inject({ method: "GET", url: "/admin/queues", headers: bearer(admin) });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain("<html");
    expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: bearer(admin) })).json().queues.map((q: { name: string }) => q.name)).toContain(queueName);
    const docs = await app.inject({ method: "GET", url: "/docs/json" });
    expect(docs.headers["www-authenticate"]).toMatch(/^Basic realm="m1l0"/);
    const post = await app.inject({ method: "POST", url: "/builds", headers: basic(admin.token), payload: CONFIG });
    expect(post.statusCode).toBe(401);
    expect(post.headers["www-authenticate"]).toBe('Bearer realm="m1l0"');
    expect((await app.inject({ method: "GET", url: "/builds", headers: basic(admin.token) })).statusCode).toBe(401);
  });

  it("keeps the dashboard and metrics for admin tokens (403 FORBIDDEN for a user token); docs for any token", async () => {
    for (const url of ["/admin/queues", "/admin/queues/api/queues", "/metrics"]) {
      const response = await app.inject({ method: "GET", url, headers: bearer(alice) });
      expect(response.statusCode, url).toBe(403);
      expect(response.json().error.code).toBe("FORBIDDEN");
    }
    expect((await app.inject({ method: "GET", url: "/metrics", headers: bearer(admin) })).body).toContain("m1l0_queue_jobs");
    expect((await app.inject({ method: "GET", url: "/docs/json", headers: bearer(alice) })).statusCode).toBe(200);
    expect((await app.inject({ method: "GET", url: "/docs/json", headers: basic(bob.token) })).statusCode).toBe(200);
  });

  it("needs a token even to learn that a path does not exist", async () => {
    expect((await app.inject({ method: "GET", url: "/no/such/route" })).statusCode).toBe(401);
    expect((await app.inject({ method: "GET", url: "/no/such/route", headers: bearer(alice) })).statusCode).toBe(404);
  });
});

describe("ownership", () => {
  let aliceBuild: string;

  beforeAll(async () => {
    const response = await submitAs(alice);
    expect(response.statusCode).toBe(202);
    aliceBuild = response.json().id;
  });

  it("records the submitting token's name, never the token", async () => {
    const record = await store.require(aliceBuild);
    expect(record.submitter).toBe("alice");
    expect(JSON.stringify(record)).not.toContain(alice.token);
    const own = await app.inject({ method: "GET", url: `/builds/${aliceBuild}`, headers: bearer(alice) });
    expect(own.statusCode).toBe(200);
    expect(own.json()).toMatchObject({ id: aliceBuild, submitter: "alice" });
  });

  it("answers another user's token 404 on read, logs, events and cancel, exactly as for a missing build", async () => {
    const missing = await app.inject({ method: "GET", url: "/builds/bld_missing000", headers: bearer(bob) });
    for (const [method, url, extra] of [
      ["GET", `/builds/${aliceBuild}`, {}],
      ["GET", `/builds/${aliceBuild}/logs`, {}],
      ["GET", `/builds/${aliceBuild}/logs?follow=1`, {}],
      ["GET", `/builds/${aliceBuild}/logs`, { accept: "text/event-stream" }],
      ["DELETE", `/builds/${aliceBuild}`, {}],
    ] as const) {
      const response = await app.inject({ method, url, headers: { ...bearer(bob), ...extra } });
      expect(response.statusCode, `${method} ${url}`).toBe(404);
      expect(response.json().error).toEqual({ code: "NOT_FOUND", message: `build ${aliceBuild} not found` });
    }
    expect(missing.json().error).toEqual({ code: "NOT_FOUND", message: "build bld_missing000 not found" });
    // bob's cancel did nothing
    expect((await store.require(aliceBuild)).status).toBe("queued");
    expect((await store.require(aliceBuild)).cancelRequestedAt).toBeUndefined();
  });

  it("lists only a user's own builds; an admin sees everyone's", async () => {
    const bobBuild = (await submitAs(bob)).json().id as string;
    const bobList = (await app.inject({ method: "GET", url: "/builds?limit=500", headers: bearer(bob) })).json().builds as Array<{ id: string; submitter?: string }>;
    expect(bobList.map((b) => b.id)).toContain(bobBuild);
    expect(bobList.map((b) => b.id)).not.toContain(aliceBuild);
    expect(bobList.every((b) => b.submitter === "bob")).toBe(true);
    const adminList = (await app.inject({ method: "GET", url: "/builds?limit=500", headers: bearer(admin) })).json().builds as Array<{ id: string }>;
    expect(adminList.map((b) => b.id)).toEqual(expect.arrayContaining([aliceBuild, bobBuild]));
    const queuedOnly = (await app.inject({ method: "GET", url: "/builds?status=queued", headers: bearer(bob) })).json().builds as Array<{ id: string }>;
    expect(queuedOnly.map((b) => b.id)).toEqual([bobBuild]);
  });

  it("lets an admin read and cancel any build, and the owner cancel its own", async () => {
    expect((await app.inject({ method: "GET", url: `/builds/${aliceBuild}/logs`, headers: bearer(admin) })).body).toMatch(/\[status\] queued/);
    const own = (await submitAs(alice)).json().id as string;
    expect((await app.inject({ method: "DELETE", url: `/builds/${own}`, headers: bearer(alice) })).statusCode).toBe(202);
    expect((await app.inject({ method: "DELETE", url: `/builds/${aliceBuild}`, headers: bearer(admin) })).statusCode).toBe(202);
    expect((await store.require(aliceBuild)).status).toBe("cancelled");
  });

  it("scopes Idempotency-Key by token: the same key from another token is another build", async () => {
    const key = `shared-${randomUUID()}`;
    const payload = distinctConfig();
    const first = await submitAs(alice, { "idempotency-key": key }, payload);
    const other = await submitAs(bob, { "idempotency-key": key }, payload);
    const repeat = await submitAs(alice, { "idempotency-key": key }, payload);
    expect(first.statusCode).toBe(202);
    expect(other.statusCode).toBe(202);
    expect(other.json().id).not.toBe(first.json().id);
    expect(repeat.statusCode).toBe(200);
    expect(repeat.json().id).toBe(first.json().id);
    expect((await store.require(other.json().id)).submitter).toBe("bob");
  });
});

describe("tokens never stored", () => {
  it("appear in no Redis key or value and in no log line", async () => {
    const needles = ALL_TOKENS.map((t) => t.token);
    const texts = await redisText(redis, prefix);
    expect(texts.length).toBeGreaterThan(0);
    for (const text of texts) for (const needle of needles) expect(text).not.toContain(needle);
    expect(logLines.length).toBeGreaterThan(10);
    for (const needle of needles) expect(logLines.join("")).not.toContain(needle);
  });
});

describe("when Redis is unreachable", () => {
  it("an authenticated submission still fails fast with 503 QUEUE_UNAVAILABLE (the rate limiter too)", async () => {
    const deadRedis = createRedis("redis://127.0.0.1:1", "producer");
    deadRedis.on("error", () => undefined);
    const deadQueue = new Queue<BuildJobData>(queueName, { connection: deadRedis });
    deadQueue.on("error", () => undefined);
    const deadStore = new BuildStore(deadRedis, prefix);
    const deadApp = await buildApp({
      auth: Authenticator.withTokens([alice.entry]),
      rateLimiter: new SubmissionRateLimiter(deadRedis, prefix, { max: 5, windowMs: 60_000 }),
      builds: new BuildService(deadStore, deadQueue, loadCatalog(), { allowHttp: false, allowDir: false }),
      store: deadStore,
      redis: deadRedis,
    });
    try {
      const started = Date.now();
      const response = await deadApp.inject({ method: "POST", url: "/builds", headers: bearer(alice), payload: CONFIG });
      expect(response.statusCode).toBe(503);
      expect(response.json().error.code).toBe("QUEUE_UNAVAILABLE");
      expect(Date.now() - started).toBeLessThan(5_000);
      // authentication itself needs no Redis
      expect((await deadApp.inject({ method: "POST", url: "/builds", payload: CONFIG })).statusCode).toBe(401);
    } finally {
      await deadApp.close();
      await deadQueue.close().catch(() => undefined);
      deadRedis.disconnect();
    }
  });
});
