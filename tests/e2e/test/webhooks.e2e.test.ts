import { SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_HEADER, verifyWebhookSignature, type WebhookDelivery, type WebhookPayload } from "@m1l0/webhooks";
import { startWebhookReceiver, type ReceivedWebhook, type WebhookReceiver } from "@m1l0/testkit";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiFetch, createGitFixture, freePort, getBuild, services, startStack, submit, waitForBuild, waitUntil, type RunningStack } from "../src/index.js";

// Completion webhooks on the real stack: real builds end, the workers deliver to a real receiver.
const run = Date.now().toString(36);
const SECRET = `whsec-e2e-${randomUUID()}`;
const LATENCY_BUILDS = Number(process.env.WEBHOOK_LATENCY_BUILDS ?? 200);
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-e2e-webhooks-"));
const cleanups: Array<() => void> = [];
let stack: RunningStack;
let receiver: WebhookReceiver;
let metricsPort: number;

function repo(dockerfile: string): string {
  const empty = mkdtempSync(path.join(dir, "empty-"));
  const fixture = createGitFixture(empty, { Dockerfile: dockerfile });
  cleanups.push(fixture.cleanup);
  return fixture.url;
}

const config = (name: string, source: string) => ({ service: "dockerhub", repository: "m1l0/e2e-webhooks", revision: `${run}-${name}`, source, dockerfile: "Dockerfile" });
const payloadOf = (got: ReceivedWebhook) => JSON.parse(got.body) as WebhookPayload;
const verified = (got: ReceivedWebhook) => verifyWebhookSignature(SECRET, { signature: got.headers[SIGNATURE_HEADER] as string, timestamp: got.headers[TIMESTAMP_HEADER] as string }, got.body);
/** The first delivery of each delivery id (a redelivery is allowed: at least once). */
const byDelivery = () => new Map(receiver.received.map((got) => [got.headers[DELIVERY_HEADER] as string, got] as const).reverse());
const deliveryFor = (buildId: string) => [...byDelivery().values()].find((got) => payloadOf(got).build.id === buildId);

beforeAll(async () => {
  receiver = await startWebhookReceiver();
  writeFileSync(path.join(dir, "orchestrator.secret"), `${SECRET}\n`, { mode: 0o600 });
  const file = path.join(dir, "webhooks.yaml");
  writeFileSync(file, `endpoints:\n  - name: orchestrator\n    url: ${receiver.url}\n    secretFile: orchestrator.secret\n    events: ["*"]\n`);
  const webhookEnv = { WEBHOOKS_FILE: file, WEBHOOK_ALLOW_HTTP: "true", WEBHOOK_HOST_ALLOWLIST: "127.0.0.0/8", WEBHOOK_BACKOFF_MS: "200" };
  metricsPort = await freePort();
  stack = await startStack({ label: "e2e-hooks", concurrency: 4, workerEnv: { ...webhookEnv, METRICS_PORT: String(metricsPort) }, apiEnv: webhookEnv });
});

afterAll(async () => {
  await stack?.stop();
  await receiver?.close();
  for (const cleanup of cleanups) cleanup();
  rmSync(dir, { recursive: true, force: true });
});

describe("completion webhooks", () => {
  it("every build's end arrives, signed, with the record's image, error and submitter", async () => {
    const okSource = repo(`FROM ${services.baseImageBusybox}\nRUN echo ok-${run}\n`);
    const ok = await submit(stack.apiUrl, config("ok", okSource));
    const failed = await submit(stack.apiUrl, config("bad", repo(`FROM ${services.baseImageBusybox}\nRUN exit 3\n`)));
    const slow = await submit(stack.apiUrl, config("slow", repo(`FROM ${services.baseImageBusybox}\nRUN sleep 120\n`)));
    await waitUntil(stack.apiUrl, slow, (record) => record.status === "building", 120_000);
    expect((await apiFetch(`${stack.apiUrl}/builds/${slow}`, { method: "DELETE" })).status).toBe(202);
    const okRecord = await waitForBuild(stack.apiUrl, ok);
    expect(okRecord.status).toBe("succeeded");
    // the same request again: nothing changed, so it ends `cached` with the same image
    const cached = await submit(stack.apiUrl, config("ok", okSource));
    const records = await Promise.all([ok, failed, slow, cached].map((id) => waitForBuild(stack.apiUrl, id)));
    expect(records.map((record) => record.status)).toEqual(["succeeded", "failed", "cancelled", "cached"]);

    const deadline = Date.now() + 60_000;
    while (records.some((record) => !deliveryFor(record.id)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    for (const record of records) {
      const got = deliveryFor(record.id);
      expect(got, `webhook for ${record.id} (${record.status})`).toBeDefined();
      expect(verified(got!)).toBe(true);
      const payload = payloadOf(got!);
      expect(payload).toMatchObject({ event: `build.${record.status}`, deliveryId: got!.headers[DELIVERY_HEADER], build: { id: record.id, status: record.status, submitter: "e2e-hooks-admin", finishedAt: record.timestamps[record.status] } });
      const image = (await getBuild(stack.apiUrl, record.id)).image;
      expect(payload.build.image).toEqual(image ? { reference: image.reference, digest: image.digest ?? null } : null);
    }
    expect(payloadOf(deliveryFor(failed)!).build.error).toMatchObject({ code: "BUILD_FAILED" });
    expect(payloadOf(deliveryFor(cached)!).build.image?.digest).toBe(okRecord.image?.digest);
    // an admin sees them in the delivery history, delivered
    const history = (await (await apiFetch(`${stack.apiUrl}/webhooks/deliveries?limit=500`)).json()) as { deliveries: WebhookDelivery[] };
    for (const record of records) expect(history.deliveries.find((d) => d.buildId === record.id)).toMatchObject({ state: "delivered", endpoint: "orchestrator", origin: new URL(receiver.url).origin });
    expect((await apiFetch(`${stack.apiUrl}/webhooks/deliveries`, { headers: { authorization: `Bearer ${stack.tokens.alice}` } })).status).toBe(403);
    // and the worker's metrics count them by outcome
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const delivered = /^m1l0_webhook_deliveries_total\{[^}]*endpoint="orchestrator",outcome="delivered"[^}]*\} (\d+)$/m.exec(metrics);
    expect(Number(delivered?.[1] ?? 0), metrics.split("\n").filter((line) => line.includes("webhook")).join("\n")).toBeGreaterThanOrEqual(4);
    expect(metrics).toMatch(/^m1l0_webhook_delivery_latency_seconds_count\{[^}]*endpoint="orchestrator"[^}]*\} \d+$/m);
  });

  it(`delivery latency over ${LATENCY_BUILDS} builds (cached resubmits of one tiny image)`, async () => {
    const source = repo(`FROM ${services.baseImageBusybox}\nRUN echo latency-${run}\n`);
    const first = await submit(stack.apiUrl, config("latency", source));
    expect((await waitForBuild(stack.apiUrl, first)).status).toBe("succeeded");
    // distinct Idempotency-Keys: 200 builds of one request, none attached to another
    const ids = await Promise.all(
      Array.from({ length: LATENCY_BUILDS }, async (_, n) => {
        const response = await apiFetch(`${stack.apiUrl}/builds`, { method: "POST", headers: { "content-type": "application/json", "idempotency-key": `latency-${run}-${n}` }, body: JSON.stringify(config("latency", source)) });
        expect(response.status).toBe(202);
        return ((await response.json()) as { id: string }).id;
      }),
    );
    const wanted = new Set(ids);
    const deadline = Date.now() + 600_000;
    const arrived = () => [...byDelivery().values()].filter((got) => wanted.has(payloadOf(got).build.id));
    while (arrived().length < ids.length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
    const deliveries = arrived();
    expect(deliveries).toHaveLength(ids.length);
    expect(deliveries.every(verified)).toBe(true);
    expect(new Set(deliveries.map((got) => payloadOf(got).build.status))).toEqual(new Set(["cached"]));
    const latencies = deliveries.map((got) => got.receivedAt - Date.parse(payloadOf(got).build.finishedAt)).sort((a, b) => a - b);
    const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)]!;
    console.log(`webhook delivery latency (build reached its status -> receiver had the request), ${latencies.length} cached builds, 4 build slots, 1 worker: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, max ${latencies.at(-1)} ms`);
    expect(latencies[0]!).toBeGreaterThanOrEqual(0);
  });
});
