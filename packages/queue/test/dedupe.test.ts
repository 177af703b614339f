import type { BuildRecord } from "@m1l0/config";
import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { newRecord, useStore } from "./helper.js";

const { redis, store, prefix } = useStore();

describe("createOrAttach (real Redis)", () => {
  it("creates, indexes and publishes the first event in one call", async () => {
    const record = newRecord();
    expect(await store.createOrAttach(record)).toEqual({ id: record.id, created: true, attached: false });
    expect((await store.get(record.id))?.status).toBe("queued");
    expect((await store.list()).map((r) => r.id)).toContain(record.id);
    const events = await store.readEvents(record.id);
    expect(events.map((e) => e.event)).toEqual([{ type: "status", status: "queued", at: record.createdAt }]);
    // the same id again is refused, not attached
    expect(await store.createOrAttach({ ...record })).toEqual({ id: record.id, created: false, attached: false });
  });

  it("a request identical to an active build attaches to it; concurrent ones all get the same build", async () => {
    const key = randomUUID();
    const outcomes = await Promise.all(Array.from({ length: 50 }, () => store.createOrAttach(newRecord({ requestKey: key }))));
    const created = outcomes.filter((o) => o.created);
    expect(created).toHaveLength(1);
    expect(new Set(outcomes.map((o) => o.id))).toEqual(new Set([created[0]!.id]));
    expect(outcomes.filter((o) => o.attached)).toHaveLength(49);
    // only one record exists for those 50 requests
    const records = (await store.list({ limit: 500 })).filter((r) => r.requestKey === key);
    expect(records).toHaveLength(1);
  });

  it("once the build finishes, the same request makes a new build", async () => {
    const key = randomUUID();
    const first = await store.createOrAttach(newRecord({ requestKey: key }));
    await store.transition(first.id, "fetching");
    expect((await store.createOrAttach(newRecord({ requestKey: key }))).id).toBe(first.id);
    await store.transition(first.id, "failed", { error: { code: "BUILD_FAILED", message: "x" } });
    const second = await store.createOrAttach(newRecord({ requestKey: key }));
    expect(second.created).toBe(true);
    expect(second.id).not.toBe(first.id);
    // the marker now names the second build (and a finished first build cannot remove it)
    expect(await redis.get(`${prefix}inflight:${key}`)).toBe(second.id);
  });

  it("a stale marker (its build finished without clearing it) does not capture new requests", async () => {
    const key = randomUUID();
    const first = await store.createOrAttach(newRecord({ requestKey: key }));
    // simulate a marker left behind: finish the record behind the store's back
    const raw = JSON.parse((await redis.get(`${prefix}build:${first.id}`))!) as BuildRecord;
    await redis.set(`${prefix}build:${first.id}`, JSON.stringify({ ...raw, status: "succeeded" }));
    const second = await store.createOrAttach(newRecord({ requestKey: key }));
    expect(second).toMatchObject({ created: true, attached: false });
  });

  it("discard (enqueue failed) removes the marker too", async () => {
    const key = randomUUID();
    const record = newRecord({ requestKey: key });
    await store.createOrAttach(record);
    await store.discard(record.id, key);
    expect(await redis.get(`${prefix}inflight:${key}`)).toBeNull();
    expect(await store.get(record.id)).toBeUndefined();
  });
});

describe("build key claims (real Redis)", () => {
  it("one holder at a time; the holder may claim again; release only by the holder; claims lapse", async () => {
    const key = `sha256:${randomUUID()}`;
    expect(await store.claimBuildKey(key, "bld_a", 60_000)).toBe("bld_a");
    expect(await store.claimBuildKey(key, "bld_b", 60_000)).toBe("bld_a");
    expect(await store.claimBuildKey(key, "bld_a", 60_000)).toBe("bld_a");
    await store.releaseBuildKey(key, "bld_b");
    expect(await store.buildKeyHolder(key)).toBe("bld_a");
    await store.releaseBuildKey(key, "bld_a");
    expect(await store.buildKeyHolder(key)).toBeUndefined();
    expect(await store.claimBuildKey(key, "bld_b", 50)).toBe("bld_b");
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(await store.claimBuildKey(key, "bld_c", 60_000)).toBe("bld_c");
  });
});
