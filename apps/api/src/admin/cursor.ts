import { BUILD_ID_PATTERN, BuilderError, type HistoryPosition } from "@m1l0/config";

/**
 * `GET /builds` cursors: base64url of `{"v":1,"t":<createdAt ms>,"id":"<build id>"}`, the
 * position of the last build of the page. Opaque to clients (the layout may change with `v`);
 * a position, not an offset, so builds arriving meanwhile never shift the next page.
 */
const CURSOR_VERSION = 1;
const MAX_CURSOR_LENGTH = 512;

export function encodeCursor(position: HistoryPosition): string {
  return Buffer.from(JSON.stringify({ v: CURSOR_VERSION, t: position.createdAtMs, id: position.id })).toString("base64url");
}

/** The position a cursor names; a VALIDATION_FAILED naming `cursor` for anything we did not make. */
export function decodeCursor(cursor: string): HistoryPosition {
  const invalid = (why: string) =>
    new BuilderError("VALIDATION_FAILED", `cursor: ${why}; pass the nextCursor of a previous page as it is`, { issues: [{ field: "cursor", message: why }] });
  if (cursor.length === 0 || cursor.length > MAX_CURSOR_LENGTH || !/^[A-Za-z0-9_-]+$/.test(cursor)) throw invalid("is not a cursor this API issued");
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw invalid("is not a cursor this API issued");
  }
  const { v, t, id } = (parsed ?? {}) as { v?: unknown; t?: unknown; id?: unknown };
  if (v !== CURSOR_VERSION) throw invalid("is not a cursor this API issued (or one of another version)");
  if (typeof t !== "number" || !Number.isSafeInteger(t) || t < 0 || typeof id !== "string" || !BUILD_ID_PATTERN.test(id)) throw invalid("names no position in the history");
  return { createdAtMs: t, id };
}
