import { compareHistoryPositions, type BuildRecord, type HistoryPosition } from "@m1l0/config";
import type { Redis } from "ioredis";

export interface LiveRecord {
  position: HistoryPosition;
  record: BuildRecord;
}

/**
 * Walks a sorted-set index (score = createdAt ms, member = build id) in history order: newest
 * first, ids ascending within one millisecond, strictly after `after` when given. Redis's own
 * REV order puts equal scores in descending id order, so each score's members are sorted here;
 * a score cut off by a batch's end is read whole before it is yielded.
 * Members whose record has expired are skipped (their archived copy takes over).
 */
export async function* walkIndexNewestFirst(
  redis: Redis,
  indexKey: string,
  recordKey: (id: string) => string,
  after?: HistoryPosition,
  batch = 200,
): AsyncGenerator<LiveRecord> {
  let max = after ? String(after.createdAtMs) : "+inf";
  for (;;) {
    const reply = await redis.zrange(indexKey, max, "-inf", "BYSCORE", "REV", "LIMIT", 0, batch, "WITHSCORES");
    if (reply.length === 0) return;
    let positions: HistoryPosition[] = [];
    for (let i = 0; i + 1 < reply.length; i += 2) positions.push({ id: reply[i]!, createdAtMs: Number(reply[i + 1]) });
    const lowest = positions[positions.length - 1]!.createdAtMs;
    if (positions.length === batch) {
      // the batch may end inside the lowest score: take that score's members in full
      const whole = await redis.zrange(indexKey, String(lowest), String(lowest), "BYSCORE");
      positions = [...positions.filter((p) => p.createdAtMs !== lowest), ...whole.map((id) => ({ id, createdAtMs: lowest }))];
    }
    positions.sort(compareHistoryPositions);
    const wanted = after ? positions.filter((p) => compareHistoryPositions(p, after) > 0) : positions;
    if (wanted.length > 0) {
      const raws = await redis.mget(wanted.map((p) => recordKey(p.id)));
      for (const [i, raw] of raws.entries()) {
        if (raw) yield { position: wanted[i]!, record: JSON.parse(raw) as BuildRecord };
      }
    }
    max = `(${lowest}`;
  }
}
