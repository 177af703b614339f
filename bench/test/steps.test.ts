import { describe, expect, it } from "vitest";
import type { BuildRecord } from "@m1l0/config";
import { AFTER_LAST_STEP, BEFORE_FIRST_STEP, buildSteps, LineStamper, stampedBuildLines, stepRows, stepTimes } from "../src/index.js";

const CLASSIC_OUTPUT = [
  [40, "Sending build context to Docker daemon  4.096kB"],
  [131, "Step 1/4 : FROM m1l0-local/python:3.11-slim"],
  [132, " ---> 0123456789ab"],
  [140, "Step 2/4 : RUN pip install --no-cache-dir -r requirements.txt"],
  [900, "Step 3 printed by pip, not a step"],
  [1180, " ---> 1123456789ab"],
  [1181, "Step 3/4 : COPY . ./"],
  [1330, "Step 4/4 : LABEL ai.m1l0.build-id=bld_1 ai.m1l0.source=x"],
  [1421, "Successfully built 2123456789ab"],
  [1425, "Successfully tagged r/x:1"],
] as const;

describe("stepTimes", () => {
  it("times each step from its Step line to the next, the last to `Successfully built`, with what comes before and after", () => {
    const times = stepTimes(CLASSIC_OUTPUT.map(([atMs, text]) => ({ atMs, text })), 1500);
    expect(times).toEqual([
      { name: BEFORE_FIRST_STEP, ms: 131 },
      { name: "Step 1/4 FROM m1l0-local/python:3.11-slim", ms: 9 },
      { name: "Step 2/4 RUN pip install --no-cache-dir -…", ms: 1041 },
      { name: "Step 3/4 COPY . ./", ms: 149 },
      // a LABEL's values are per build: its name must match across builds
      { name: "Step 4/4 LABEL (per-build values)", ms: 91 },
      { name: AFTER_LAST_STEP, ms: 79 },
    ]);
  });

  it("is undefined for output without steps or that never says it was built", () => {
    expect(stepTimes([{ atMs: 1, text: "hello" }], 10)).toBeUndefined();
    expect(stepTimes([{ atMs: 1, text: "Step 1/2 : FROM x" }, { atMs: 5, text: "ERROR: boom" }], 10)).toBeUndefined();
  });
});

describe("stampedBuildLines", () => {
  it("keeps the build phase's lines, stamped relative to the start", () => {
    const log = ["2026-12-04T01:00:00.000Z [fetch] cloned", "2026-12-04T01:00:00.250Z [build] Step 1/2 : FROM x", "2026-12-04T01:00:01.000Z [status] pushing", "2026-12-04T01:00:00.900Z [build] Successfully built abc123"].join("\n");
    expect(stampedBuildLines(log, "2026-12-04T01:00:00.100Z")).toEqual([
      { atMs: 150, text: "Step 1/2 : FROM x" },
      { atMs: 800, text: "Successfully built abc123" },
    ]);
  });
});

describe("buildSteps", () => {
  it("times a build's steps within its building → pushing span, and is undefined without both", () => {
    const log = ["2026-12-04T01:00:00.100Z [build] Step 1/1 : COPY . ./", "2026-12-04T01:00:00.300Z [build] Successfully built abc123"].join("\n");
    const record = { timestamps: { building: "2026-12-04T01:00:00.000Z", pushing: "2026-12-04T01:00:00.450Z" } } as unknown as BuildRecord;
    expect(buildSteps(record, log)).toEqual([
      { name: BEFORE_FIRST_STEP, ms: 100 },
      { name: "Step 1/1 COPY . ./", ms: 200 },
      { name: AFTER_LAST_STEP, ms: 150 },
    ]);
    expect(buildSteps({ timestamps: { building: "2026-12-04T01:00:00.000Z" } } as unknown as BuildRecord, log)).toBeUndefined();
  });
});

describe("LineStamper", () => {
  it("splits chunks into lines, keeps a character split across chunks whole and flushes the last partial line", () => {
    const stamper = new LineStamper(performance.now());
    const euro = Buffer.from("€");
    stamper.write(Buffer.concat([Buffer.from("one\ntw"), euro.subarray(0, 1)]));
    stamper.write(Buffer.concat([euro.subarray(1), Buffer.from("o\nthree")]));
    stamper.end();
    expect(stamper.lines.map((line) => line.text)).toEqual(["one", "tw€o", "three"]);
    expect(stamper.lines.every((line) => line.atMs >= 0)).toBe(true);
  });
});

describe("stepRows", () => {
  it("gives each step's median for both variants and ours − CLI, in the order of ours", () => {
    const ours = [
      [{ name: BEFORE_FIRST_STEP, ms: 120 }, { name: "Step 1/1 COPY . ./", ms: 170 }, { name: AFTER_LAST_STEP, ms: 150 }],
      [{ name: BEFORE_FIRST_STEP, ms: 140 }, { name: "Step 1/1 COPY . ./", ms: 180 }, { name: AFTER_LAST_STEP, ms: 160 }],
    ];
    const cli = [[{ name: BEFORE_FIRST_STEP, ms: 131 }, { name: "Step 1/1 COPY . ./", ms: 200 }, { name: AFTER_LAST_STEP, ms: 5 }]];
    const rows = stepRows(ours, cli, { before: "ours: a; CLI: b", after: "ours: c; CLI: d" });
    expect(rows).toEqual([
      [`  ${BEFORE_FIRST_STEP} (ours: a; CLI: b)`, "130 ms (120 ms–140 ms, n=2)", "131 ms (n=1)", "−1.0 ms"],
      ["  Step 1/1 COPY . ./", "175 ms (170 ms–180 ms, n=2)", "200 ms (n=1)", "−25 ms"],
      [`  ${AFTER_LAST_STEP} (ours: c; CLI: d)`, "155 ms (150 ms–160 ms, n=2)", "5.0 ms (n=1)", "+150 ms"],
    ]);
  });
});
