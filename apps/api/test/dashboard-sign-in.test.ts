import { loadCatalog } from "@m1l0/catalog";
import { createApiToken } from "@m1l0/config";
import { BuildStore, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import type { FastifyInstance, InjectOptions } from "fastify";
import type { Redis } from "ioredis";
import { buildTestApi, logCapture, type TestApi } from "./helper.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { safeNext } from "../src/admin/index.js";
import { Authenticator, BuildService, DashboardSessions, SESSION_COOKIE, buildApp } from "../src/index.js";

const TTL = 900;
const admin = createApiToken("ops", "admin");
const alice = createApiToken("alice", "user");

let queueName: string;
let redis: Redis;
let queue: Queue<BuildJobData>;
let store: BuildStore;
let sessions: DashboardSessions;
let app: FastifyInstance;
const log = logCapture();
const logLines = log.lines;

const HOST = "dash.example:8080";
const sameOrigin = { host: HOST, origin: `http://${HOST}`, "sec-fetch-site": "same-origin" };
const form = (fields: Record<string, string>, headers: Record<string, string> = sameOrigin): InjectOptions => ({
  method: "POST",
  url: "/admin/login",
  headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
  payload: new URLSearchParams(fields).toString(),
});

/** Signs in with the form as a browser would and returns the Set-Cookie header and the session id. */
async function signIn(token = admin.token, next?: string) {
  const response = await app.inject(form({ token, ...(next ? { next } : {}) }));
  expect(response.statusCode, response.body).toBe(303);
  const setCookie = String(response.headers["set-cookie"]);
  const id = new RegExp(`^${SESSION_COOKIE}=([^;]+);`).exec(setCookie)?.[1];
  if (!id) throw new Error(`no session cookie in ${setCookie}`);
  return { response, setCookie, id, cookie: `${SESSION_COOKIE}=${id}` };
}

let api: TestApi;
beforeAll(async () => {
  api = await buildTestApi({
    name: "signin",
    app: (parts) => {
      sessions = new DashboardSessions(parts.redis, { prefix: parts.prefix, ttlSeconds: TTL });
      return {
        auth: Authenticator.withTokens([admin.entry, alice.entry]),
        queue: parts.queue,
        sessions,
        logger: { level: "trace", stream: log.stream, redact: ["req.headers.authorization", "req.headers.cookie"] },
      };
    },
  });
  ({ redis, queue, store, app, queueName } = api);
});

afterAll(() => api?.close());

describe("dashboard sign-in (a token form and a session cookie)", () => {
  it("sends a browser without a session to the sign-in form, and a script gets 401 with a Bearer challenge", async () => {
    const browser = await app.inject({ method: "GET", url: "/admin/queues/queue/x?status=completed", headers: { accept: "text/html,application/xhtml+xml" } });
    expect(browser.statusCode).toBe(303);
    expect(browser.headers.location).toBe(`/admin/login?next=${encodeURIComponent("/admin/queues/queue/x?status=completed")}`);
    const script = await app.inject({ method: "GET", url: "/admin/queues/api/queues" });
    expect(script.statusCode).toBe(401);
    expect(script.headers["www-authenticate"]).toBe('Bearer realm="m1l0"');
  });

  it("serves the form: a password field, no script, a strict CSP, never cached", async () => {
    const page = await app.inject({ method: "GET", url: "/admin/login?next=%2Fadmin%2Fqueues%2Fqueue%2Fx" });
    expect(page.statusCode).toBe(200);
    expect(page.headers["content-type"]).toContain("text/html");
    expect(page.body).toMatch(/<form method="post" action="\/admin\/login">/);
    expect(page.body).toMatch(/<input type="password" id="token" name="token"/);
    expect(page.body).toContain('name="next" value="/admin/queues/queue/x"');
    expect(page.body).not.toContain("<script");
    expect(page.headers["content-security-policy"]).toContain("default-src 'none'");
    expect(page.headers["content-security-policy"]).toContain("form-action 'self'");
    expect(page.headers["cache-control"]).toBe("no-store");
    expect(page.headers["x-frame-options"]).toBe("DENY");
  });

  it("an admin token sets an HttpOnly, SameSite=Strict, short-lived cookie that is not the token, stored in Redis only as a hash", async () => {
    const { response, setCookie, id } = await signIn(admin.token, "/admin/queues/queue/x?status=completed");
    expect(response.headers.location).toBe("/admin/queues/queue/x?status=completed");
    expect(setCookie).toMatch(new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]{43}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=${TTL}$`));
    expect(setCookie).not.toContain(admin.token);
    expect(id).not.toContain(admin.entry.sha256);
    const ttl = await redis.ttl(sessions.key(id));
    expect(ttl).toBeGreaterThan(TTL - 10);
    expect(ttl).toBeLessThanOrEqual(TTL);
    const stored = await redis.get(sessions.key(id));
    expect(JSON.parse(stored!)).toMatchObject({ name: "ops", role: "admin" });
    expect(stored).not.toContain(id);
    expect(stored).not.toContain(admin.token);
    expect(sessions.key(id)).not.toContain(id);
  });

  it("the cookie opens the dashboard page, its data, scripts and English locale file, and nothing else", async () => {
    const { cookie } = await signIn();
    const withCookie = (method: InjectOptions["method"], url: string, extra: Partial<InjectOptions> = {}) => app.inject({ method, url, headers: { cookie }, ...extra });

    const page = await withCookie("GET", "/admin/queues");
    expect(page.statusCode).toBe(200);
    const script = /src="(static\/js\/main\.[0-9a-f]+\.js)"/.exec(page.body)?.[1];
    expect(script).toBeDefined();
    expect((await withCookie("GET", `/admin/queues/${script}`)).statusCode).toBe(200);
    expect((await withCookie("GET", "/admin/queues/api/queues")).json().queues.map((q: { name: string }) => q.name)).toContain(queueName);
    const locale = await withCookie("GET", "/admin/queues/static/locales/en-US/messages.json?v=9.10.2");
    expect(locale.statusCode).toBe(200);
    expect(locale.json().QUEUE.STATUS.LATEST).toBe("Latest");
    expect(locale.json().JOB.TABS.DATA).toBe("Data");

    // never the build API, the metrics, the docs, or a dashboard route that changes something
    for (const [method, url] of [["GET", "/builds"], ["POST", "/builds"], ["GET", "/builds/bld_x/logs"], ["GET", "/metrics"], ["GET", "/docs/json"], ["PUT", "/admin/queues/api/queues/pause"]] as const) {
      const response = await withCookie(method, url, method === "GET" ? {} : { payload: {} });
      expect(response.statusCode, `${method} ${url}`).toBe(401);
    }
    expect(await queue.count()).toBe(0);
  });

  it("refuses a user token (403), a wrong token (401) and an empty one, without a cookie and without repeating the token", async () => {
    for (const [token, status] of [[alice.token, 403], ["m1l0_wrong", 401], ["", 401], [admin.entry.sha256, 401]] as const) {
      const response = await app.inject(form({ token }));
      expect(response.statusCode, token).toBe(status);
      expect(response.headers["set-cookie"]).toBeUndefined();
      expect(response.body).toContain('role="alert"');
      if (token) expect(response.body).not.toContain(token);
    }
    expect((await app.inject(form({ token: alice.token }))).body).toContain("not an admin token");
  });

  it("refuses a sign-in posted from another site (Origin, Referer, Sec-Fetch-Site), so nobody can sign a browser in (CSRF)", async () => {
    const attempts: Array<Record<string, string>> = [
      { host: HOST },
      { host: HOST, origin: "null" },
      { host: HOST, origin: "http://evil.example" },
      { host: HOST, referer: "http://evil.example/page" },
      { host: HOST, origin: `http://${HOST}`, "sec-fetch-site": "cross-site" },
      { host: HOST, origin: `http://${HOST}`, "sec-fetch-site": "same-site" },
    ];
    for (const headers of attempts) {
      const response = await app.inject(form({ token: admin.token }, headers));
      expect(response.statusCode, JSON.stringify(headers)).toBe(403);
      expect(response.headers["set-cookie"]).toBeUndefined();
    }
    // a browser behind TLS at a proxy: the scheme differs, the host matches
    expect((await app.inject(form({ token: admin.token }, { host: HOST, origin: `https://${HOST}` }))).statusCode).toBe(303);
  });

  it("goes back only to dashboard paths (no open redirect)", async () => {
    expect(safeNext("/admin/queues/queue/a?status=failed")).toBe("/admin/queues/queue/a?status=failed");
    for (const next of ["//evil.example/admin/queues", "https://evil.example/admin/queues", "/\\evil.example", "/builds", "/admin/queuesx", "/admin/queues/../../builds", "javascript:alert(1)", undefined]) {
      expect(safeNext(next), String(next)).toMatch(/^\/admin\/queues(\/|$)/);
      expect(safeNext(next)).not.toContain("evil");
    }
    expect(safeNext("/admin/queues/../../builds")).toBe("/admin/queues");
    expect((await signIn(admin.token, "//evil.example/x")).response.headers.location).toBe("/admin/queues");
  });

  it("sign-out ends the session on every replica: the old cookie is refused, and a browser is sent back to the form", async () => {
    const { cookie, id } = await signIn();
    expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { cookie } })).statusCode).toBe(200);
    const out = await app.inject({ method: "GET", url: "/admin/logout", headers: { cookie } });
    expect(out.statusCode).toBe(303);
    expect(out.headers.location).toBe("/admin/login?signed-out=1");
    expect(String(out.headers["set-cookie"])).toMatch(new RegExp(`^${SESSION_COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0`));
    expect(await redis.exists(sessions.key(id))).toBe(0);
    expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { cookie } })).statusCode).toBe(401);
    const stale = await app.inject({ method: "GET", url: "/admin/queues", headers: { cookie, accept: "text/html" } });
    expect(stale.statusCode).toBe(303);
    expect(stale.headers.location).toMatch(/^\/admin\/login\?next=/);
    expect(String(stale.headers["set-cookie"])).toContain("Max-Age=0");

    // POST sign-out from another site is refused; from the dashboard it works
    const second = await signIn();
    expect((await app.inject({ method: "POST", url: "/admin/logout", headers: { cookie: second.cookie, host: HOST, origin: "http://evil.example" } })).statusCode).toBe(403);
    expect(await redis.exists(sessions.key(second.id))).toBe(1);
    expect((await app.inject({ method: "POST", url: "/admin/logout", headers: { cookie: second.cookie, ...sameOrigin } })).statusCode).toBe(303);
    expect(await redis.exists(sessions.key(second.id))).toBe(0);
  });

  it("ends a session when it expires, or when its token is gone from the configuration", async () => {
    const { cookie, id } = await signIn();
    // another replica whose configuration no longer lists the `ops` token
    const other = await buildApp({ auth: Authenticator.withTokens([alice.entry]), builds: new BuildService(store, queue, loadCatalog(), { allowHttp: false, allowDir: false }), store, redis, queue, sessions });
    try {
      expect((await other.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { cookie } })).statusCode).toBe(401);
    } finally {
      await other.close();
    }
    expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { cookie } })).statusCode).toBe(200);
    // what Redis does when the TTL runs out
    await redis.del(sessions.key(id));
    expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { cookie } })).statusCode).toBe(401);
    // a made-up or malformed cookie
    for (const value of ["x".repeat(43), "short", `${id};x`, ""]) {
      expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { cookie: `${SESSION_COOKIE}=${value}` } })).statusCode, value).toBe(401);
    }
  });

  it("a Bearer admin token still opens the dashboard (scripts), Basic no longer does", async () => {
    expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { authorization: `Bearer ${admin.token}` } })).statusCode).toBe(200);
    const basic = `Basic ${Buffer.from(`admin:${admin.token}`).toString("base64")}`;
    expect((await app.inject({ method: "GET", url: "/admin/queues/api/queues", headers: { authorization: basic } })).statusCode).toBe(401);
  });

  it("never logs a token or a session id", async () => {
    const { id } = await signIn();
    await app.inject({ method: "GET", url: "/admin/queues", headers: { cookie: `${SESSION_COOKIE}=${id}` } });
    const text = logLines.join("");
    expect(text).toContain("dashboard sign-in");
    expect(text).not.toContain(admin.token);
    expect(text).not.toContain(id);
  });
});
