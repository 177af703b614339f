import type { BuildRecord } from "./build.js";

/**
 * Where a build sits in the history, newest first: by creation time (ms, descending), then by
 * id (ascending, plain code-unit order) among builds created in the same millisecond. Both
 * never change, so a position is a stable place to resume a listing from, whichever store
 * (Redis or the archive) holds the record.
 */
export interface HistoryPosition {
  createdAtMs: number;
  id: string;
}

/** Negative when `a` comes first in the newest-first history. */
export function compareHistoryPositions(a: HistoryPosition, b: HistoryPosition): number {
  if (a.createdAtMs !== b.createdAtMs) return b.createdAtMs - a.createdAtMs;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

export function historyPositionOf(record: Pick<BuildRecord, "id" | "createdAt">): HistoryPosition {
  return { createdAtMs: Date.parse(record.createdAt), id: record.id };
}
