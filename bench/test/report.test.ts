import { describe, expect, it } from "vitest";
import { renderTargets, type Table } from "../src/index.js";

const table = (title: string, rows: string[][]): Table => ({ title, columns: ["metric", "ours", "baseline", "ratio", "target", "met?"], rows, notes: [] });

describe("renderTargets", () => {
  it("lists every row with a target and a verdict, and says which were not measured or failed", () => {
    const text = renderTargets([
      table("3. Code-only change — dependency layer reused", [
        ["wall time", "3.1 s", "20 s", "0.16×", "≤ 0.3× cold", "yes"],
        ["  landing on w2", "3.0 s", "19 s", "0.16×", "", ""],
      ]),
      table("2. Unchanged resubmit", [
        ["skip-if-unchanged", "not measured: later", "331 ms", "–", "< 250 ms", "–"],
        ["today", "748 ms", "331 ms", "2.26×", "(informative)", ""],
      ]),
      { title: "7. Fleet scaling", columns: ["result"], rows: [["FAILED: boom"]], notes: [] },
    ]);
    expect(text).toContain("| 3. Code-only change | wall time | 3.1 s | ≤ 0.3× cold | yes |");
    expect(text).not.toContain("landing on w2");
    expect(text).toContain("| 2. Unchanged resubmit | skip-if-unchanged | not measured: later | < 250 ms | not measured |");
    expect(text).not.toContain("informative");
    expect(text).toContain("| 7. Fleet scaling | – | FAILED: boom | – | – |");
  });
});
