/**
 * Step by step: where a cold build's time goes, ours against the docker CLI, from the time each
 * classic-builder output line arrived (the worker stamps every log line as it reads it from the
 * daemon; the runner stamps the CLI's stdout lines the same way). Both run the same generated
 * Dockerfile on the same daemon, so equal steps should cost the same and the gap shows where.
 */
import type { BuildRecord } from "@m1l0/config";
import { StringDecoder } from "node:string_decoder";
import { formatMs, formatSummary, summarize } from "./stats.js";

/** One output line and when it arrived, in ms from the start of what is timed. */
export interface StampedLine {
  atMs: number;
  text: string;
}

/** Before the first step, each step (its `Step N/M` line to the next one; the last to `Successfully built`), after it; in output order. */
export type StepTimes = Array<{ name: string; ms: number }>;

export const BEFORE_FIRST_STEP = "before Step 1";
export const AFTER_LAST_STEP = "after `Successfully built`";

const STEP_LINE = /^Step (\d+\/\d+) : (\S+)\s*(.*)$/;
const BUILT_LINE = /^Successfully built [0-9a-f]+/;
const ARGUMENTS_SHOWN = 28;

/** "Step 3/7 RUN pip install …"; a LABEL's values differ per build, so only its instruction names it. */
function stepName(number: string, instruction: string, args: string): string {
  const upper = instruction.toUpperCase();
  if (upper === "LABEL") return `Step ${number} LABEL (per-build values)`;
  const shown = args.length > ARGUMENTS_SHOWN ? `${args.slice(0, ARGUMENTS_SHOWN)}…` : args;
  return `Step ${number} ${upper} ${shown}`.trimEnd();
}

/**
 * Durations of a classic-builder run whose timed span is [0, endMs]: the time before its first
 * `Step` line, each step, and the rest after `Successfully built`. Undefined when the output has
 * no step or never says it was built (a failed or foreign output).
 */
export function stepTimes(lines: readonly StampedLine[], endMs: number): StepTimes | undefined {
  const marks: Array<{ name: string; atMs: number }> = [];
  let builtAt: number | undefined;
  for (const line of lines) {
    const text = line.text.trim();
    const step = STEP_LINE.exec(text);
    if (step && builtAt === undefined) marks.push({ name: stepName(step[1]!, step[2]!, step[3]!), atMs: line.atMs });
    else if (BUILT_LINE.test(text) && marks.length > 0) builtAt ??= line.atMs;
  }
  if (marks.length === 0 || builtAt === undefined) return undefined;
  const times: StepTimes = [{ name: BEFORE_FIRST_STEP, ms: marks[0]!.atMs }];
  marks.forEach((mark, index) => times.push({ name: mark.name, ms: (marks[index + 1]?.atMs ?? builtAt) - mark.atMs }));
  times.push({ name: AFTER_LAST_STEP, ms: Math.max(0, endMs - builtAt) });
  return times;
}

/** The worker's build-phase lines from a build log (`<ISO time> [build] <line>`), stamped relative to `startIso`. */
export function stampedBuildLines(log: string, startIso: string): StampedLine[] {
  const start = Date.parse(startIso);
  const lines: StampedLine[] = [];
  for (const line of log.split("\n")) {
    const match = /^(\S+) \[build\] (.*)$/.exec(line);
    if (match) lines.push({ atMs: Date.parse(match[1]!) - start, text: match[2]! });
  }
  return lines;
}

/** A finished build's docker build step by step, from its log, timed within its building → pushing span. */
export function buildSteps(record: BuildRecord, log: string): StepTimes | undefined {
  const { building, pushing } = record.timestamps;
  return building && pushing ? stepTimes(stampedBuildLines(log, building), Date.parse(pushing) - Date.parse(building)) : undefined;
}

/** Splits stdout chunks into lines stamped with the chunk's arrival (a chunk's lines share one stamp). */
export class LineStamper {
  readonly lines: StampedLine[] = [];
  readonly #decoder = new StringDecoder("utf8");
  #partial = "";

  constructor(private readonly started: number) {}

  write(chunk: Buffer): void {
    const now = performance.now() - this.started;
    const parts = (this.#partial + this.#decoder.write(chunk)).split("\n");
    this.#partial = parts.pop() ?? "";
    for (const text of parts) this.lines.push({ atMs: now, text });
  }

  end(): void {
    this.#partial += this.#decoder.end();
    if (this.#partial) this.lines.push({ atMs: performance.now() - this.started, text: this.#partial });
    this.#partial = "";
  }
}

/** What the first and last rows hold for each variant, e.g. "ours: from `building` …; CLI: from spawn …". */
export interface StepLabels {
  before: string;
  after: string;
}

/**
 * Table rows [name, ours, baseline, difference]: the median of each step over the samples of
 * each variant, matched by name, in the order of ours. The difference column is ours − baseline
 * of the medians, so the rows show which steps make the gap.
 */
export function stepRows(ours: readonly StepTimes[], baseline: readonly StepTimes[], labels: StepLabels): string[][] {
  const names = [...new Set([...ours, ...baseline].flatMap((times) => times.map((time) => time.name)))];
  const medianOf = (samples: readonly StepTimes[], name: string) => {
    const values = samples.flatMap((times) => times.filter((time) => time.name === name).map((time) => time.ms));
    return values.length ? summarize(values) : undefined;
  };
  return names.map((name) => {
    const mine = medianOf(ours, name);
    const theirs = medianOf(baseline, name);
    const label = name === BEFORE_FIRST_STEP ? `${name} (${labels.before})` : name === AFTER_LAST_STEP ? `${name} (${labels.after})` : name;
    const difference = mine && theirs ? signedMs(mine.median - theirs.median) : "";
    return [`  ${label}`, mine ? formatSummary(mine, formatMs) : "–", theirs ? formatSummary(theirs, formatMs) : "–", difference];
  });
}

function signedMs(ms: number): string {
  return `${ms < 0 ? "−" : "+"}${formatMs(Math.abs(ms))}`;
}
