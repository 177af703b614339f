import type { BuildEvent, BuildRecord } from "@m1l0/sdk";

// ANSI escapes and other control characters must not reach the terminal from build output
const CONTROL = /\x1b\[[0-9;?]*[ -/]*[@-~]|[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

export function sanitize(text: string): string {
  return text.replace(CONTROL, "");
}

export function formatDuration(ms: number): string {
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.floor((ms % 60_000) / 1000);
  return `${minutes}m${String(seconds).padStart(2, "0")}s`;
}

/** The same line format as GET /builds/:id/logs. */
export function formatEventLine(event: BuildEvent): string {
  if (event.type === "log") return `${event.at} [${event.phase}] ${sanitize(event.line)}`;
  const detail = event.error ? `: ${event.error.code}: ${sanitize(event.error.message)}` : event.image ? `: ${event.image.reference}@${event.image.digest ?? ""}` : "";
  return `${event.at} [status] ${event.status}${detail}`;
}

/** Wall time from queued to the final status (or to now while running). */
export function buildDuration(record: BuildRecord, now = Date.now()): number {
  const start = Date.parse(record.createdAt);
  const finalStatus = record.timestamps[record.status];
  const end = ["succeeded", "failed", "cancelled", "cached"].includes(record.status) && finalStatus ? Date.parse(finalStatus) : now;
  return Math.max(0, end - start);
}

export function describeRecord(record: BuildRecord): string {
  const rows: Array<[string, string | undefined]> = [
    ["id", record.id],
    ["status", record.status],
    ["repository", `${record.config.repository}:${record.config.revision}`],
    ["source", record.config.source],
    ["commit", record.commit],
    ["base image", record.baseImage],
    ["worker", record.worker],
    ["attempts", String(record.attempts)],
    ["created", record.createdAt],
    ["duration", formatDuration(buildDuration(record))],
    ["image", record.image?.reference],
    ["digest", record.image?.digest],
    ["error", record.error ? `${record.error.code}: ${sanitize(record.error.message)}` : undefined],
  ];
  const width = Math.max(...rows.map(([key]) => key.length)) + 1;
  return rows
    .filter((row): row is [string, string] => row[1] !== undefined && row[1] !== "")
    .map(([key, value]) => `${`${key}:`.padEnd(width)} ${value}`)
    .join("\n");
}

export function formatTable(records: BuildRecord[], now = Date.now()): string {
  const header = ["ID", "STATUS", "IMAGE", "CREATED", "DURATION"];
  const rows = records.map((record) => [
    record.id,
    record.status,
    `${record.config.repository}:${record.config.revision}`,
    record.createdAt.replace(/\.\d+Z$/, "Z"),
    formatDuration(buildDuration(record, now)),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]?.length ?? 0)));
  return [header, ...rows].map((row) => row.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join("  ").trimEnd()).join("\n");
}
