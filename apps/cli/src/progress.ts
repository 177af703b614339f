import type { BuildEvent, BuildRecord, BuildStatus } from "@m1l0/sdk";
import { buildDuration, formatDuration, sanitize } from "./format.js";

/** Where progress goes: a stream that may be a terminal. */
export interface Output {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/** Shows a followed build's progress; `finish` prints the outcome, `stop` abandons the view. */
export interface ProgressView {
  onEvent(event: BuildEvent): void;
  finish(record: BuildRecord): void;
  stop(): void;
}

const FINAL: readonly BuildStatus[] = ["succeeded", "failed", "cancelled", "cached"];

function outcome(record: BuildRecord): string {
  const took = formatDuration(buildDuration(record));
  if (record.error) return `build ${record.id} ${record.status} after ${took}: ${record.error.code}: ${sanitize(record.error.message)}`;
  return `build ${record.id} ${record.status} in ${took}`;
}

/** Plain lines for pipes and logs: no escapes, one line per event. */
export class PlainProgressView implements ProgressView {
  constructor(private readonly out: Output) {}

  onEvent(event: BuildEvent): void {
    if (event.type === "log") {
      this.out.write(`[${event.phase}] ${sanitize(event.line)}\n`);
    } else if (!FINAL.includes(event.status)) {
      this.out.write(`==> ${event.status}\n`);
    }
  }

  finish(record: BuildRecord): void {
    this.out.write(`==> ${outcome(record)}\n`);
  }

  stop(): void {}
}

// `<layer id>: <state>` as the worker logs each layer state change Docker reports during a push
const PUSH_LAYER_LINE = /^([0-9a-f]{12,64}): (.+)$/;
const LAYER_DONE = /^(Pushed|Layer already exists|Mounted from)/;
const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];
const RECENT_LINES = 6;
const MAX_LAYER_ROWS = 8;

const ESC = "\x1b[";
const bold = (text: string) => `${ESC}1m${text}${ESC}22m`;
const dim = (text: string) => `${ESC}2m${text}${ESC}22m`;
const green = (text: string) => `${ESC}32m${text}${ESC}39m`;
const red = (text: string) => `${ESC}31m${text}${ESC}39m`;

/**
 * The terminal view: finished phases scroll by with their durations; below them a live
 * area (current phase, elapsed time, push progress per layer, the last log lines) is
 * redrawn in place.
 */
export class TtyProgressView implements ProgressView {
  private phase: BuildStatus = "queued";
  /** server time the current phase began; unknown until its status event arrives */
  private phaseStartedAt: number | undefined;
  private readonly startedAt: number;
  private readonly recent: string[] = [];
  private readonly layers = new Map<string, string>();
  private liveRows = 0;
  private frame = 0;
  private readonly timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly now: () => number;

  constructor(
    private readonly out: Output,
    private readonly buildId: string,
    options: { redrawMs?: number; now?: () => number } = {},
  ) {
    this.now = options.now ?? Date.now;
    this.startedAt = this.now();
    this.out.write(`${ESC}?25l`);
    if (options.redrawMs !== 0) {
      this.timer = setInterval(() => this.redraw(), options.redrawMs ?? 100);
      this.timer.unref();
    }
  }

  onEvent(event: BuildEvent): void {
    if (event.type === "log") {
      const line = sanitize(event.line);
      const layer = event.phase === "push" ? PUSH_LAYER_LINE.exec(line) : null;
      if (layer?.[1] && layer[2]) this.layers.set(layer[1], layer[2]);
      this.recent.push(`[${event.phase}] ${line}`);
      if (this.recent.length > RECENT_LINES) this.recent.shift();
      return;
    }
    // phase durations from the server's timestamps: events may arrive late or in one batch
    const at = Date.parse(event.at);
    const eventTime = Number.isNaN(at) ? this.now() : at;
    if (event.status === this.phase) {
      this.phaseStartedAt ??= eventTime;
      return;
    }
    const failed = event.status === "failed" || event.status === "cancelled";
    const took = this.phaseStartedAt === undefined ? "" : ` ${dim(formatDuration(Math.max(0, eventTime - this.phaseStartedAt)))}`;
    this.printAbove(`${failed ? red("✖") : green("✔")} ${this.phase.padEnd(9)}${took}`);
    this.phase = event.status;
    this.phaseStartedAt = eventTime;
  }

  finish(record: BuildRecord): void {
    this.clearLive();
    const failed = record.status === "failed" || record.status === "cancelled";
    if (failed && this.recent.length > 0) {
      this.out.write(dim(`last log lines:\n${this.recent.map((line) => `  ${this.fit(line, 2)}`).join("\n")}\n`));
    }
    const mark = failed ? red("✖") : green("✔");
    this.out.write(`${mark} ${bold(outcome(record))}\n`);
    this.stop();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.clearLive();
    this.out.write(`${ESC}?25h`);
  }

  /** Redraws the live area (the timer calls this; tests call it directly). */
  redraw(): void {
    if (this.stopped) return;
    this.frame = (this.frame + 1) % SPINNER.length;
    const rows = [`${SPINNER[this.frame]} ${bold(this.phase)}  ${formatDuration(this.now() - this.startedAt)}  ${dim(this.buildId)}`];
    if (this.layers.size > 0) rows.push(...this.layerRows());
    rows.push(...this.recent.map((line) => dim(`  │ ${this.fit(line, 4)}`)));
    this.clearLive();
    this.out.write(rows.join("\n") + "\n");
    this.liveRows = rows.length;
  }

  private layerRows(): string[] {
    const entries = [...this.layers];
    const done = entries.filter(([, state]) => LAYER_DONE.test(state)).length;
    const width = 20;
    const filled = Math.round((done / entries.length) * width);
    const rows = [`  layers ${"█".repeat(filled)}${"░".repeat(width - filled)} ${done}/${entries.length}`];
    // unfinished layers first: they are the ones worth watching
    const ordered = [...entries.filter(([, state]) => !LAYER_DONE.test(state)), ...entries.filter(([, state]) => LAYER_DONE.test(state))];
    for (const [layer, state] of ordered.slice(0, MAX_LAYER_ROWS)) {
      rows.push(`  ${LAYER_DONE.test(state) ? green("✔") : "…"} ${layer.slice(0, 12)}  ${this.fit(state, 18)}`);
    }
    if (ordered.length > MAX_LAYER_ROWS) rows.push(dim(`  … ${ordered.length - MAX_LAYER_ROWS} more`));
    return rows;
  }

  private printAbove(line: string): void {
    this.clearLive();
    this.out.write(`${line}\n`);
    if (!this.stopped) this.redraw();
  }

  private clearLive(): void {
    if (this.liveRows > 0) this.out.write(`${ESC}${this.liveRows}F${ESC}J`);
    this.liveRows = 0;
  }

  /** Cuts a line to the terminal width so it never wraps (wrapping breaks the redraw). */
  private fit(text: string, indent: number): string {
    const room = Math.max(20, (this.out.columns ?? 80) - indent - 1);
    return text.length > room ? `${text.slice(0, room - 1)}…` : text;
  }
}
