import { createApiToken, type BuildRecord } from "@m1l0/config";
import { WebhookDeliveryStore, type WebhookDelivery } from "@m1l0/webhooks";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Authenticator } from "../src/index.js";
import { buildTestApi, type TestApi } from "./helper.js";

// GET /webhooks/deliveries (admin, paged) over the real Redis history, and the webhook of a build cancelled while queued.
const admin = createApiToken("hooks-admin", "admin");
const user = createApiToken("hooks-user", "user");
const bearer = (t: { token: string }) => ({ authorization: `Bearer ${t.token}` });

describe("webhooks in the API", () => {
  let api: TestApi;
  let history: WebhookDeliveryStore;
  const notified: BuildRecord[] = [];

  beforeAll(async () => {
    api = await buildTestApi({
      name: "webhooks",
      sources: { allowHttp: false, allowDir: false, sourceHosts: { allowPrivateHosts: false, hostAllowlist: [] } },
      app: ({ redis, prefix }) => {
        history = new WebhookDeliveryStore(redis, prefix);
        return { auth: Authenticator.withTokens([admin.entry, user.entry]), webhookDeliveries: history, notifier: { buildEnded: async (record) => void notified.push(record) } };
      },
    });
  });
  afterAll(() => api?.close());

  const delivery = (n: number): WebhookDelivery => ({
    id: `bld_${n}.succeeded.ci`,
    endpoint: "ci",
    origin: "https://ci.example.com",
    event: "build.succeeded",
    buildId: `bld_${n}`,
    status: "succeeded",
    state: "delivered",
    attempts: 1,
    maxAttempts: 10,
    eventAt: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
    createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString(),
  });

  it("lists deliveries newest first, paged, to admins only", async () => {
    for (let n = 1; n <= 5; n++) await history.create(delivery(n));
    const first = await api.app.inject({ method: "GET", url: "/webhooks/deliveries?limit=2", headers: bearer(admin) });
    expect(first.statusCode).toBe(200);
    const page1 = first.json() as { deliveries: WebhookDelivery[]; nextCursor: string };
    expect(page1.deliveries.map((d) => d.buildId)).toEqual(["bld_5", "bld_4"]);
    const seen = [...page1.deliveries];
    let cursor: string | null = page1.nextCursor;
    while (cursor) {
      const page = (await api.app.inject({ method: "GET", url: `/webhooks/deliveries?limit=2&cursor=${cursor}`, headers: bearer(admin) })).json() as { deliveries: WebhookDelivery[]; nextCursor: string | null };
      seen.push(...page.deliveries);
      cursor = page.nextCursor;
    }
    expect(seen.map((d) => d.buildId)).toEqual(["bld_5", "bld_4", "bld_3", "bld_2", "bld_1"]);
    expect((await api.app.inject({ method: "GET", url: "/webhooks/deliveries", headers: bearer(user) })).statusCode).toBe(403);
    expect((await api.app.inject({ method: "GET", url: "/webhooks/deliveries" })).statusCode).toBe(401);
  });

  it.each([
    ["limit=0", "limit"],
    ["limit=abc", "limit"],
    ["cursor=bogus", "cursor"],
  ])("refuses %s naming the field", async (query, field) => {
    const response = await api.app.inject({ method: "GET", url: `/webhooks/deliveries?${query}`, headers: bearer(admin) });
    expect(response.statusCode).toBe(400);
    expect((response.json() as { error: { issues: Array<{ field: string }> } }).error.issues[0]!.field).toBe(field);
  });

  it("tells the notifier when it cancels a build that was still queued (no worker will end it)", async () => {
    const submitted = await api.app.inject({ method: "POST", url: "/builds", headers: bearer(user), payload: { service: "dockerhub", repository: "m1l0/hooks", source: "https://git.example.com/me/hooks.git" } });
    expect(submitted.statusCode).toBe(202);
    const { id } = submitted.json() as { id: string };
    const cancelled = await api.app.inject({ method: "DELETE", url: `/builds/${id}`, headers: bearer(user) });
    expect(cancelled.json()).toMatchObject({ status: "cancelled", cancel: "cancelled" });
    expect(notified.map((record) => [record.id, record.status, record.submitter])).toEqual([[id, "cancelled", "hooks-user"]]);
  });
});
