import { compareHistoryPositions, historyPositionOf, type BuildRecord } from "@m1l0/config";
import { randomUUID } from "node:crypto";
import { expect, it } from "vitest";
import { config, useStore } from "./helper.js";

const { redis, store, prefix } = useStore();

async function collect(iterable: AsyncIterable<{ record: BuildRecord }>): Promise<string[]> {
  const ids: string[] = [];
  for await (const item of iterable) ids.push(item.record.id);
  return ids;
}

it("newestFirst walks Redis newest first, ids ascending within a millisecond, across batch ends, after a position", async () => {
  const base = Date.now() - 60_000;
  const records: BuildRecord[] = [];
  // 7 builds share one millisecond (more than a batch of 3), the rest are spread out
  for (let i = 0; i < 20; i++) {
    const at = new Date(i < 7 ? base + 5_000 : base + i * 1_000).toISOString();
    const id = `bld_${String.fromCharCode(122 - i)}${randomUUID().slice(0, 6)}`;
    records.push({ id, status: "queued", config, createdAt: at, updatedAt: at, timestamps: { queued: at }, attempts: 0 });
  }
  for (const record of records) expect(await store.create(record)).toBe(true);
  const expected = records.map(historyPositionOf).sort(compareHistoryPositions).map((p) => p.id);

  expect(await collect(store.newestFirst(undefined, 3))).toEqual(expected);
  expect(await collect(store.newestFirst())).toEqual(expected);
  // resuming after any position gives exactly the rest, also in the middle of the shared millisecond
  for (const cut of [0, 3, 9, 10, 15, 19]) {
    const after = historyPositionOf(records.find((r) => r.id === expected[cut])!);
    expect(await collect(store.newestFirst(after, 3))).toEqual(expected.slice(cut + 1));
  }
  // a record that expired while its index entry remains is skipped
  await redis.del(`${prefix}build:${expected[4]}`);
  expect(await collect(store.newestFirst(undefined, 3))).toEqual(expected.filter((_, i) => i !== 4));
});
