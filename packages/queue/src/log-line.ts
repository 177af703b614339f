/** Defaults of the live log in Redis (LOG_TAIL_EVENTS, LOG_LINE_MAX_BYTES); the archived log has no cap. */
export const LOG_TAIL_EVENTS_DEFAULT = 2_000;
export const LOG_LINE_MAX_BYTES_DEFAULT = 8_192;
/** Redis trims a stream by whole nodes (MAXLEN ~): up to this many entries more than asked stay */
export const STREAM_TRIM_SLACK = 100;
/** an event's JSON around its line (type, phase, timestamp) plus the stream entry's own overhead, generously */
export const EVENT_OVERHEAD_BYTES = 256;

/**
 * The most Redis holds for one build's events: the tail, its trim slack, each event at most
 * a line of `lineMaxBytes` plus its overhead (stated in the README, asserted by the e2e test).
 */
export function logTailBoundBytes(tailEvents: number, lineMaxBytes: number): number {
  return (tailEvents + STREAM_TRIM_SLACK) * (lineMaxBytes + EVENT_OVERHEAD_BYTES);
}

/**
 * A line longer than `maxBytes` (UTF-8) is cut there and says so: never dropped silently.
 * The cut never splits a character.
 */
export function truncateLogLine(line: string, maxBytes: number): string {
  const size = Buffer.byteLength(line, "utf8");
  if (size <= maxBytes) return line;
  const marker = ` … [line truncated: ${size} bytes, first ${maxBytes} kept]`;
  let kept = Buffer.from(line, "utf8").subarray(0, maxBytes).toString("utf8");
  // a character cut in half decodes as U+FFFD at the end: drop it
  if (kept.endsWith("\uFFFD") && !line.startsWith(kept)) kept = kept.slice(0, -1);
  return kept + marker;
}
