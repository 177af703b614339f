import { describe, expect, it } from "vitest";
import { BuildStore, buildJobSchema, createRedis } from "../src/index.js";
import { config, newRecord, REDIS_URL, useStore } from "./helper.js";

const { redis, store, prefix } = useStore();

describe("BuildStore (real Redis)", () => {
  it("creates a record once per id and reads it back", async () => {
    const record = newRecord();
    expect(await store.create(record)).toBe(true);
    expect(await store.create({ ...record, status: "failed" })).toBe(false);
    expect(await store.get(record.id)).toMatchObject({ id: record.id, status: "queued" });
    await expect(store.require("bld_missing")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("records each status transition with a timestamp and publishes events in order", async () => {
    const record = newRecord();
    await store.create(record);
    await store.transition(record.id, "fetching", { worker: "w1" });
    await store.appendLog(record.id, "fetch", "cloning");
    await store.transition(record.id, "building");
    await store.appendLog(record.id, "build", "Step 1/2 : FROM x");
    await store.transition(record.id, "failed", { error: { code: "BUILD_FAILED", message: "boom" } });
    const stored = await store.get(record.id);
    expect(stored?.status).toBe("failed");
    expect(Object.keys(stored?.timestamps ?? {})).toEqual(["queued", "fetching", "building", "failed"]);
    expect(stored?.worker).toBe("w1");
    const events = (await store.readEvents(record.id)).map((item) => item.event);
    expect(events.map((event) => (event.type === "status" ? event.status : event.line))).toEqual([
      "queued",
      "fetching",
      "cloning",
      "building",
      "Step 1/2 : FROM x",
      "failed",
    ]);
    expect(events.at(-1)).toMatchObject({ type: "status", error: { code: "BUILD_FAILED" } });
    expect(await redis.ttl(`${prefix}build:${record.id}:events`)).toBeGreaterThan(0);
  });

  it("follow() yields live events as they are written and ends at a terminal status", async () => {
    const record = newRecord();
    await store.create(record);
    const seen: string[] = [];
    const following = (async () => {
      for await (const item of store.follow(record.id)) {
        seen.push(item.event.type === "status" ? item.event.status : item.event.line);
      }
    })();
    await new Promise((resolve) => setTimeout(resolve, 150));
    await store.appendLog(record.id, "build", "line 1");
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(seen).toEqual(["queued", "line 1"]); // delivered before the build ended
    await store.transition(record.id, "succeeded");
    await following;
    expect(seen).toEqual(["queued", "line 1", "succeeded"]);
  });

  it("follow() resumes after a given event id without repeating", async () => {
    const record = newRecord();
    await store.create(record);
    await store.appendLog(record.id, "build", "a");
    const afterA = (await store.readEvents(record.id)).at(-1)!.id;
    await store.appendLog(record.id, "build", "b");
    await store.transition(record.id, "succeeded");
    const lines: string[] = [];
    for await (const item of store.follow(record.id, afterA)) lines.push(item.event.type === "log" ? item.event.line : item.event.status);
    expect(lines).toEqual(["b", "succeeded"]);
  });

  it("lists recent builds newest first, filtered by status", async () => {
    const first = newRecord();
    await store.create(first);
    await new Promise((resolve) => setTimeout(resolve, 5));
    const second = newRecord();
    await store.create(second);
    await store.transition(second.id, "succeeded");
    const all = await store.list({ limit: 500 });
    expect(all.findIndex((r) => r.id === second.id)).toBeLessThan(all.findIndex((r) => r.id === first.id));
    const succeeded = await store.list({ status: "succeeded" });
    expect(succeeded.some((r) => r.id === second.id)).toBe(true);
    expect(succeeded.some((r) => r.id === first.id)).toBe(false);
  });
});

describe("BuildStore.update (real Redis)", () => {
  it("never loses an update: two stores on their own connections increment one record concurrently", async () => {
    const record = newRecord();
    await store.create(record);
    const otherConnection = createRedis(REDIS_URL, "producer");
    const other = new BuildStore(otherConnection, prefix);
    const increment = (target: BuildStore) => target.update(record.id, (current) => ({ ...current, attempts: current.attempts + 1 }));
    await Promise.all(Array.from({ length: 40 }, (_, index) => increment(index % 2 === 0 ? store : other)));
    expect((await store.require(record.id)).attempts).toBe(40);
    otherConnection.disconnect();
  });

  it("applies one store's updates of a record in call order, and keeps the finished record's TTL", async () => {
    const record = newRecord();
    await store.create(record);
    const updates = ["w-1", "w-2", "w-3"].map((worker) => store.update(record.id, (current) => ({ ...current, worker, attempts: current.attempts + 1 })));
    expect((await Promise.all(updates)).map((updated) => updated.attempts)).toEqual([1, 2, 3]);
    expect(await store.require(record.id)).toMatchObject({ worker: "w-3", attempts: 3 });
    await store.transition(record.id, "failed");
    const ttl = await redis.ttl(`${prefix}build:${record.id}`);
    expect(ttl).toBeGreaterThan(0);
    await store.update(record.id, (current) => ({ ...current, worker: "w-4" }));
    expect(await redis.ttl(`${prefix}build:${record.id}`)).toBeGreaterThan(ttl - 5);
  });

  it("a record that is gone, or a mutation that refuses, rejects and writes nothing", async () => {
    await expect(store.update("bld_missing", (current) => current)).rejects.toMatchObject({ code: "NOT_FOUND" });
    const record = newRecord();
    await store.create(record);
    await expect(
      store.update(record.id, () => {
        throw new Error("refused");
      }),
    ).rejects.toThrow("refused");
    expect(await store.require(record.id)).toMatchObject({ attempts: 0, updatedAt: record.updatedAt });
    // the next update of the record is not held back by the refused one
    expect((await store.update(record.id, (current) => ({ ...current, attempts: 1 }))).attempts).toBe(1);
  });
});

describe("build job contract", () => {
  it("accepts id + config and rejects anything else (no room for credentials)", () => {
    expect(buildJobSchema.parse({ buildId: "bld_x", config }).buildId).toBe("bld_x");
    expect(() => buildJobSchema.parse({ buildId: "bld_x", config, password: "p" })).toThrow();
    expect(() => buildJobSchema.parse({ buildId: "../x", config })).toThrow();
  });
});
