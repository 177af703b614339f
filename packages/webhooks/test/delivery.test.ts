import type { BuildRecord, BuildStatus } from "@m1l0/config";
import { createRedis } from "@m1l0/queue";
import { freePort, startHungServer, startWebhookReceiver, waitFor, type WebhookReceiver } from "@m1l0/testkit";
import type { Worker } from "bullmq";
import type { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Registry } from "prom-client";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  DELIVERY_HEADER,
  EVENT_HEADER,
  SIGNATURE_HEADER,
  TIMESTAMP_HEADER,
  WebhookDeliveryStore,
  WebhookMetrics,
  WebhookNotifier,
  loadWebhookSettings,
  startWebhookDeliveryWorker,
  verifyWebhookSignature,
  type WebhookDelivery,
  type WebhookPayload,
} from "../src/index.js";

// Delivery against real HTTP receivers, through a real BullMQ queue on the shared Redis (a queue and namespace per case).
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const SECRET_A = `whsec-a-${randomUUID()}`;
const SECRET_B = `whsec-b-${randomUUID()}`;
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-webhooks-"));
writeFileSync(path.join(dir, "a.secret"), `${SECRET_A}\n`);
writeFileSync(path.join(dir, "b.secret"), SECRET_B);

let redis: Redis;
beforeAll(() => {
  redis = createRedis(REDIS_URL, "worker");
});
afterAll(async () => {
  redis?.disconnect();
  rmSync(dir, { recursive: true, force: true });
});

function record(status: BuildStatus, extra: Partial<BuildRecord> = {}): BuildRecord {
  const now = new Date().toISOString();
  return {
    id: `bld_${randomUUID().replaceAll("-", "")}`,
    status,
    config: {} as BuildRecord["config"],
    createdAt: now,
    updatedAt: now,
    timestamps: { queued: now, [status]: now },
    attempts: 1,
    submitter: "ci-bot",
    ...extra,
  };
}

interface Harness {
  notifier: WebhookNotifier;
  worker: Worker;
  history: WebhookDeliveryStore;
  metrics: Registry;
  prefix: string;
  queueName: string;
}
const open: Harness[] = [];
afterEach(async () => {
  for (const h of open.splice(0)) {
    await h.worker.close();
    await h.notifier.close();
    const keys = await redis.keys(`${h.prefix}*`);
    const queueKeys = await redis.keys(`bull:${h.queueName}:*`);
    if (keys.length + queueKeys.length) await redis.del(...keys, ...queueKeys);
  }
});

/** A webhooks file for `endpoints`, the settings it gives, a notifier and a delivery worker on a queue of their own. */
function harness(endpoints: Array<{ name: string; url: string; secretFile: string; events: string[] }>, env: NodeJS.ProcessEnv = {}): Harness {
  const file = path.join(dir, `webhooks-${randomUUID()}.yaml`);
  writeFileSync(file, JSON.stringify({ endpoints }));
  const settings = loadWebhookSettings({ WEBHOOKS_FILE: file, WEBHOOK_ALLOW_HTTP: "true", WEBHOOK_HOST_ALLOWLIST: "127.0.0.0/8", WEBHOOK_BACKOFF_MS: "100", ...env })!;
  const prefix = `test:${randomUUID()}:`;
  const queueName = `test-webhooks-${randomUUID()}`;
  const history = new WebhookDeliveryStore(redis, prefix);
  const metrics = new Registry();
  const notifier = new WebhookNotifier(redis, queueName, settings, history);
  const worker = startWebhookDeliveryWorker({ connection: redis, queueName, settings, history, metrics: new WebhookMetrics(metrics), logger: { info: () => undefined, warn: () => undefined } });
  const h = { notifier, worker, history, metrics, prefix, queueName };
  open.push(h);
  return h;
}

const payloadOf = (received: { body: string }) => JSON.parse(received.body) as WebhookPayload;
const verified = (secret: string, received: { headers: Record<string, string | string[] | undefined>; body: string }) =>
  verifyWebhookSignature(secret, { signature: received.headers[SIGNATURE_HEADER] as string, timestamp: received.headers[TIMESTAMP_HEADER] as string }, received.body);

async function settled(history: WebhookDeliveryStore, id: string, timeoutMs: number): Promise<WebhookDelivery> {
  let delivery: WebhookDelivery | undefined;
  await waitFor(`delivery ${id} to settle`, timeoutMs, async () => {
    delivery = await history.get(id);
    return delivery?.state === "delivered" || delivery?.state === "failed";
  });
  return delivery!;
}

async function counter(registry: Registry, outcome: string): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === "m1l0_webhook_deliveries_total");
  return (metric?.values ?? []).filter((v) => v.labels.outcome === outcome).reduce((sum, v) => sum + v.value, 0);
}

describe("webhook delivery", () => {
  let receivers: WebhookReceiver[] = [];
  afterEach(async () => {
    for (const r of receivers.splice(0)) await r.close();
  });
  const receiver = async (options: Parameters<typeof startWebhookReceiver>[0] = {}) => {
    const r = await startWebhookReceiver(options);
    receivers.push(r);
    return r;
  };

  it("delivers each configured status, signed, with a delivery id, to every endpoint that wants it, once", async () => {
    const all = await receiver();
    const failures = await receiver();
    const h = harness([
      { name: "all", url: all.url, secretFile: "a.secret", events: ["*"] },
      { name: "failures", url: failures.url, secretFile: "b.secret", events: ["failed"] },
    ]);
    const image = { registry: "r.example", repository: "team/app", tag: "v1", reference: "r.example/team/app:v1", digest: `sha256:${"d".repeat(64)}` };
    const builds = [
      record("succeeded", { image }),
      record("failed", { error: { code: "BUILD_FAILED", message: "RUN step exited 1" } }),
      record("cancelled"),
      record("cached", { image }),
    ];
    for (const build of [...builds, record("queued")]) await h.notifier.buildEnded(build);
    // a build ended twice (a repeated finish) is still one delivery
    await h.notifier.buildEnded(builds[0]!);
    await waitFor("4 + 1 deliveries", 30_000, () => all.received.length >= 4 && failures.received.length >= 1);
    for (const build of builds) await settled(h.history, `${build.id}.${build.status}.all`, 10_000);
    expect(all.received).toHaveLength(4);
    expect(failures.received).toHaveLength(1);
    for (const got of all.received) {
      expect(verified(SECRET_A, got)).toBe(true);
      expect(verified(SECRET_B, got)).toBe(false);
      const payload = payloadOf(got);
      expect(got.headers[DELIVERY_HEADER]).toBe(payload.deliveryId);
      expect(got.headers[EVENT_HEADER]).toBe(`build.${payload.build.status}`);
      expect(got.headers["content-type"]).toBe("application/json");
    }
    expect(verified(SECRET_B, failures.received[0]!)).toBe(true);
    const byStatus = Object.fromEntries(all.received.map((got) => [payloadOf(got).build.status, payloadOf(got)]));
    expect(Object.keys(byStatus).sort()).toEqual(["cached", "cancelled", "failed", "succeeded"]);
    expect(byStatus.succeeded).toMatchObject({ event: "build.succeeded", build: { id: builds[0]!.id, image: { reference: image.reference, digest: image.digest }, error: null, submitter: "ci-bot" } });
    expect(byStatus.failed!.build).toMatchObject({ image: null, error: { code: "BUILD_FAILED", message: "RUN step exited 1" } });
    expect(byStatus.succeeded!.build.finishedAt).toBe(builds[0]!.timestamps.succeeded);
    // a tampered body fails verification
    const first = all.received[0]!;
    expect(verified(SECRET_A, { ...first, body: first.body.replace("build.", "build!") })).toBe(false);
    // the admin history: newest first, paged, every delivery delivered
    const page1 = await h.history.page({ limit: 3 });
    const page2 = await h.history.page({ limit: 3, cursor: page1.nextCursor! });
    const ids = [...page1.deliveries, ...page2.deliveries].map((d) => d.id);
    expect(new Set(ids).size).toBe(5);
    expect(page2.nextCursor).toBeNull();
    expect([...page1.deliveries, ...page2.deliveries].every((d) => d.state === "delivered" && d.attempts === 1 && d.lastStatusCode === 204)).toBe(true);
    expect(await counter(h.metrics, "delivered")).toBe(5);
  });

  it("gets every event to a receiver that is down for 10 s, once it is back", async () => {
    const port = await freePort();
    const h = harness([{ name: "later", url: `http://127.0.0.1:${port}/hook`, secretFile: "a.secret", events: ["*"] }], { WEBHOOK_BACKOFF_MS: "500", WEBHOOK_ATTEMPTS: "10" });
    const builds = Array.from({ length: 5 }, () => record("succeeded"));
    for (const build of builds) await h.notifier.buildEnded(build);
    const downSince = Date.now();
    await waitFor("a failed attempt", 10_000, async () => (await counter(h.metrics, "retry")) >= 5);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 10_000 - (Date.now() - downSince))));
    const back = await receiver({ port });
    const backAt = Date.now();
    await waitFor("every event after the receiver returned", 60_000, () => new Set(back.received.map((got) => payloadOf(got).build.id)).size === builds.length);
    console.log(`receiver down ${backAt - downSince} ms; all ${builds.length} events arrived ${Math.max(...back.received.map((got) => got.receivedAt)) - backAt} ms after it returned`);
    for (const build of builds) {
      const delivery = await settled(h.history, `${build.id}.succeeded.later`, 10_000);
      expect(delivery.state).toBe("delivered");
      expect(delivery.attempts).toBeGreaterThan(1);
    }
    expect(back.received.every((got) => verified(SECRET_A, got))).toBe(true);
  });

  it("ends `failed` after the configured attempts against a receiver answering 500, with the reason", async () => {
    const broken = await receiver({ answer: 500 });
    const h = harness([{ name: "broken", url: broken.url, secretFile: "a.secret", events: ["failed"] }], { WEBHOOK_ATTEMPTS: "3", WEBHOOK_BACKOFF_MS: "50" });
    const build = record("failed", { error: { code: "BUILD_FAILED", message: "boom" } });
    await h.notifier.buildEnded(build);
    const delivery = await settled(h.history, `${build.id}.failed.broken`, 30_000);
    expect(delivery).toMatchObject({ state: "failed", attempts: 3, maxAttempts: 3, lastStatusCode: 500, lastError: { code: "WEBHOOK_HTTP_STATUS", message: "gave up after 3 attempts: the receiver answered HTTP 500: receiver says 500" } });
    expect(broken.received).toHaveLength(3);
    // the same delivery id each time: a receiver that did act on one of them can drop the rest
    expect(new Set(broken.received.map((got) => got.headers[DELIVERY_HEADER])).size).toBe(1);
    expect(await counter(h.metrics, "retry")).toBe(2);
    expect(await counter(h.metrics, "failed")).toBe(1);
  });

  it("does not let a receiver that accepts and never answers hold a delivery past its deadline", async () => {
    const hung = await startHungServer();
    try {
      const h = harness([{ name: "hung", url: `${hung.address}/hook`, secretFile: "a.secret", events: ["*"] }], { WEBHOOK_ATTEMPTS: "2", WEBHOOK_BACKOFF_MS: "50", WEBHOOK_TIMEOUT_SECONDS: "0.5" });
      const build = record("succeeded");
      const start = Date.now();
      await h.notifier.buildEnded(build);
      const delivery = await settled(h.history, `${build.id}.succeeded.hung`, 20_000);
      const elapsed = Date.now() - start;
      expect(delivery).toMatchObject({ state: "failed", attempts: 2, lastError: { code: "WEBHOOK_TIMEOUT" } });
      expect(delivery.lastError!.message).toMatch(/no complete answer from http:\/\/127\.0\.0\.1:\d+ within 500 ms/);
      expect(hung.connections).toBeGreaterThanOrEqual(2);
      // two attempts of 0.5 s and a 50 ms backoff: far less than the 20 s wait would allow
      expect(elapsed).toBeLessThan(10_000);
    } finally {
      await hung.close();
    }
  });

  it("does not follow redirects, and reads no more of an endless answer than the cap", async () => {
    const target = await receiver();
    const redirecting = await receiver({ answer: { redirect: target.url } });
    const endless = await receiver({ answer: "endless-body" });
    const h = harness(
      [
        { name: "redirecting", url: redirecting.url, secretFile: "a.secret", events: ["*"] },
        { name: "endless", url: endless.url, secretFile: "a.secret", events: ["*"] },
      ],
      { WEBHOOK_ATTEMPTS: "1", WEBHOOK_TIMEOUT_SECONDS: "5", WEBHOOK_MAX_RESPONSE_BYTES: "65536" },
    );
    const build = record("succeeded");
    await h.notifier.buildEnded(build);
    const redirected = await settled(h.history, `${build.id}.succeeded.redirecting`, 20_000);
    expect(redirected).toMatchObject({ state: "failed", lastStatusCode: 302, lastError: { code: "WEBHOOK_REDIRECT" } });
    expect(target.received).toHaveLength(0);
    // a 200 whose body never ends is delivered once the cap is read, not timed out
    const capped = await settled(h.history, `${build.id}.succeeded.endless`, 20_000);
    expect(capped).toMatchObject({ state: "delivered", lastStatusCode: 200 });
  });
});

describe("webhook settings", () => {
  const file = path.join(dir, "settings.yaml");
  const load = (yaml: string, env: NodeJS.ProcessEnv = {}) => {
    writeFileSync(file, yaml);
    return loadWebhookSettings({ WEBHOOKS_FILE: file, ...env });
  };
  const endpoint = (url: string, extra = "") => `endpoints:\n  - name: ci\n    url: ${url}\n    secretFile: a.secret\n    events: [succeeded, failed]\n${extra}`;

  it("loads endpoints, reading the secret from its file, and never shows the secret", () => {
    const settings = load(endpoint("https://ci.example.com/hook"), { WEBHOOK_ATTEMPTS: "4" })!;
    expect(settings.endpoints).toHaveLength(1);
    expect([...settings.endpoints[0]!.events]).toEqual(["succeeded", "failed"]);
    expect(settings.attempts).toBe(4);
    expect(settings.endpoints[0]!.secret.sign("1", "{}")).toMatch(/^sha256=[0-9a-f]{64}$/);
    expect(JSON.stringify(settings)).not.toContain(SECRET_A);
    expect(String(settings.endpoints[0]!.secret)).toBe("[redacted]");
    expect(loadWebhookSettings({})).toBeUndefined();
  });

  it.each([
    ["http://169.254.169.254/latest", { WEBHOOK_ALLOW_HTTP: "true", WEBHOOK_ALLOW_PRIVATE_HOSTS: "true" }, /endpoints\[0\]\.url: host 169\.254\.169\.254 is not allowed: a cloud metadata address; webhooks may only go to public addresses/],
    ["https://10.1.2.3/hook", {}, /endpoints\[0\]\.url: host 10\.1\.2\.3 is not allowed: a private address.*WEBHOOK_HOST_ALLOWLIST/],
    ["https://127.0.0.1:9/hook", {}, /a loopback address/],
    ["https://localhost/hook", {}, /a loopback name/],
    ["http://ci.example.com/hook", {}, /endpoints\[0\]\.url: must be an https:\/\/ URL \(WEBHOOK_ALLOW_HTTP=true allows http:\/\/\)/],
    ["https://user:pw@ci.example.com/hook", {}, /must not carry credentials/],
    ["not a url", {}, /endpoints\[0\]\.url: not a URL/],
  ])("refuses the URL %s with a clear error", (url, env, message) => {
    expect(() => load(endpoint(url), env)).toThrow(message);
  });

  it("allows a private host the operator allowlisted", () => {
    expect(load(endpoint("https://10.1.2.3/hook"), { WEBHOOK_HOST_ALLOWLIST: "10.0.0.0/8" })!.endpoints[0]!.url.host).toBe("10.1.2.3");
  });

  it.each([
    ["endpoints:\n  - name: ci\n    url: https://a.example/h\n    secretFile: missing.secret\n    events: ['*']\n", /WEBHOOKS_FILE: endpoints\[0\]\.secretFile: cannot read .*missing\.secret: ENOENT/],
    ["endpoints:\n  - name: ci\n    url: https://a.example/h\n    secret: short\n    events: ['*']\n", /endpoints\[0\]\.secret: the secret must be at least 16 characters/],
    ["endpoints:\n  - name: ci\n    url: https://a.example/h\n    events: ['*']\n", /endpoints\[0\]\.secretFile: give exactly one of secretFile \(preferred\) or secret/],
    ["endpoints:\n  - name: ci\n    url: https://a.example/h\n    secretFile: a.secret\n    events: [done]\n", /WEBHOOKS_FILE: endpoints\[0\]\.events\[0\]: must be succeeded, failed, cancelled, cached or \*/],
    [`${endpoint("https://a.example/h")}  - name: ci\n    url: https://b.example/h\n    secretFile: a.secret\n    events: ['*']\n`, /endpoints\[1\]\.name: ci is used twice/],
    ["endpoints: [", /WEBHOOKS_FILE: .* is neither YAML nor JSON/],
  ])("refuses a bad file (%#) naming the field", (yaml, message) => {
    expect(() => load(yaml)).toThrow(message);
  });

  it("names a bad variable", () => {
    expect(() => loadWebhookSettings({ WEBHOOKS_FILE: file, WEBHOOK_ATTEMPTS: "0" })).toThrow(/WEBHOOK_ATTEMPTS: /);
  });
});
