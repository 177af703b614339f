import type { BuildEvent, BuildRecord } from "@m1l0/sdk";
import { describe, expect, it } from "vitest";
import { PlainProgressView, TtyProgressView, type Output } from "../src/index.js";

function capture(isTTY: boolean, columns = 60): Output & { text: string } {
  const out = { text: "", isTTY, columns, write: (chunk: string) => (out.text += chunk) };
  return out;
}

const at = "2026-01-01T00:00:00.000Z";
const time = (seconds: number) => new Date(Date.parse(at) + seconds * 1000).toISOString();
const status = (value: BuildEvent & { type: "status" }) => value;
const log = (phase: "fetch" | "build" | "push", line: string): BuildEvent => ({ type: "log", phase, line, at });

const events: BuildEvent[] = [
  status({ type: "status", status: "queued", at }),
  status({ type: "status", status: "fetching", at: time(0.5) }),
  log("fetch", "resolved commit 0123456789abcdef0123456789abcdef01234567"),
  status({ type: "status", status: "building", at: time(2) }),
  log("build", "Step 1/8 : FROM m1l0-local/python:3.11-bookworm"),
  log("build", "\x1b[31mred text\x1b[0m from pip"),
  status({ type: "status", status: "pushing", at: time(32.2) }),
  log("push", "pushing 127.0.0.1:5000/m1l0/mnist:v1"),
  log("push", "aaaaaaaaaaaa: Preparing"),
  log("push", "bbbbbbbbbbbb: Preparing"),
  log("push", "aaaaaaaaaaaa: Pushing"),
  log("push", "bbbbbbbbbbbb: Layer already exists"),
];

const record: BuildRecord = {
  id: "bld_test",
  status: "succeeded",
  config: { service: "dockerhub", repository: "m1l0/mnist", source: "https://example.com/x.git", revision: "v1", framework: "python", pyversion: "3.11", resource: "cpu", entry: "main.py", tags: [], ignores: [] },
  createdAt: "2026-01-01T00:00:00.000Z",
  updatedAt: "2026-01-01T00:00:42.000Z",
  timestamps: { queued: "2026-01-01T00:00:00.000Z", succeeded: "2026-01-01T00:00:42.000Z" },
  attempts: 1,
  image: { registry: "127.0.0.1:5000", repository: "m1l0/mnist", tag: "v1", reference: "127.0.0.1:5000/m1l0/mnist:v1", digest: `sha256:${"a".repeat(64)}` },
};

const stripAnsi = (text: string) => text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");

describe("TtyProgressView", () => {
  it("scrolls finished phases with their server-side durations, redraws push progress per layer and the last log lines, and restores the cursor", () => {
    const out = capture(true);
    let now = 0;
    const view = new TtyProgressView(out, "bld_test", { redrawMs: 0, now: () => now });
    for (const event of events) {
      now += 1500;
      view.onEvent(event);
    }
    view.redraw();
    const live = stripAnsi(out.text.slice(out.text.lastIndexOf("\x1b[J")));
    expect(live).toMatch(/pushing {2}\d+\.\ds {2}bld_test/);
    expect(live).toContain("layers ██████████░░░░░░░░░░ 1/2");
    // unfinished layers first
    expect(live.indexOf("… aaaaaaaaaaaa  Pushing")).toBeLessThan(live.indexOf("✔ bbbbbbbbbbbb  Layer already exists"));
    expect(live).toContain("│ [push] bbbbbbbbbbbb: Layer already exists");
    expect(live).not.toContain("\x1b[31m"); // build output's own escapes are stripped

    view.onEvent(status({ type: "status", status: "succeeded", at: time(42) }));
    view.finish(record);
    const text = stripAnsi(out.text);
    expect(text).toMatch(/✔ queued +0\.5s\n/);
    expect(text).toMatch(/✔ fetching +1\.5s\n/);
    expect(text).toMatch(/✔ building +30\.2s\n/);
    expect(text).toMatch(/✔ pushing +9\.8s\n/);
    expect(text).toMatch(/✔ build bld_test succeeded in 42\.0s\n$/);
    expect(out.text.endsWith("\x1b[?25h")).toBe(true);
  });

  it("never writes a line wider than the terminal", () => {
    const out = capture(true, 40);
    const view = new TtyProgressView(out, "bld_test", { redrawMs: 0 });
    view.onEvent(log("build", "x".repeat(200)));
    view.redraw();
    const lines = stripAnsi(out.text).split("\n");
    expect(Math.max(...lines.map((line) => line.length))).toBeLessThan(40);
    view.stop();
  });

  it("shows the last log lines and the reason when the build fails", () => {
    const out = capture(true);
    const view = new TtyProgressView(out, "bld_test", { redrawMs: 0 });
    view.onEvent(status({ type: "status", status: "building", at }));
    view.onEvent(log("build", "python3: can't open file 'missing.py'"));
    view.onEvent(status({ type: "status", status: "failed", at: time(3) }));
    view.finish({ ...record, status: "failed", timestamps: { ...record.timestamps, failed: "2026-01-01T00:00:42.000Z" }, image: undefined, error: { code: "ENTRY_NOT_FOUND", message: 'entry file "missing.py" was not found' } });
    const text = stripAnsi(out.text);
    expect(text).toMatch(/✖ building +3\.0s\n/);
    expect(text).toContain("last log lines:\n  [build] python3: can't open file 'missing.py'");
    expect(text).toMatch(/✖ build bld_test failed after 42\.0s: ENTRY_NOT_FOUND: entry file "missing.py" was not found\n/);
  });
});

describe("PlainProgressView", () => {
  it("prints one plain line per event with no escapes", () => {
    const out = capture(false);
    const view = new PlainProgressView(out);
    for (const event of events) view.onEvent(event);
    view.finish(record);
    expect(out.text).not.toContain("\x1b");
    expect(out.text.split("\n")).toEqual([
      "==> queued",
      "==> fetching",
      "[fetch] resolved commit 0123456789abcdef0123456789abcdef01234567",
      "==> building",
      "[build] Step 1/8 : FROM m1l0-local/python:3.11-bookworm",
      "[build] red text from pip",
      "==> pushing",
      "[push] pushing 127.0.0.1:5000/m1l0/mnist:v1",
      "[push] aaaaaaaaaaaa: Preparing",
      "[push] bbbbbbbbbbbb: Preparing",
      "[push] aaaaaaaaaaaa: Pushing",
      "[push] bbbbbbbbbbbb: Layer already exists",
      "==> build bld_test succeeded in 42.0s",
      "",
    ]);
  });
});
