import { runNode } from "@m1l0/testkit";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

// CI's smoke test of the benchmark runner: `node bench/dist/main.js --quick` runs every benchmark
// with tiny sizes against the real services (as scripts/test.sh starts them, fleet daemons
// included) and must complete and print a figure for each. Timings are never asserted.
const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const TITLES = ["1. Overhead", "2. Unchanged resubmit", "3. Code-only change", "4. Context packing", "5. Ingress", "6. Pickup latency", "7. Fleet scaling", "8. Clone at real size", "9. Scale of state", "10. A framework-sized image"];
// a measured figure in a table cell: a number with a unit of time, rate, size or ratio
const FIGURE = /\| [^|]*\d(?:\.\d+)? ?(?:ms|s|MiB\/s|\/s|MiB|KiB|×)(?=[\s|(,])/;


/** The report's sections by title ("## 3. Code-only change — …" → its text up to the next section). */
function sections(report: string): Map<string, string> {
  const result = new Map<string, string>();
  for (const part of report.split(/^## /m).slice(1)) result.set(part.slice(0, part.indexOf("\n")), part);
  return result;
}

describe("benchmark runner --quick (CI smoke test, no timing assertions)", () => {
  it("runs every benchmark to completion and prints a figure for each", async () => {
    const { code, stdout, stderr } = await runNode([path.join(ROOT_DIR, "bench/dist/main.js"), "--quick"], { cwd: ROOT_DIR });
    const diagnostics = `${stdout.slice(-4000)}\n--- stderr ---\n${stderr.split("\n").filter((line) => line.startsWith("[bench")).join("\n")}`;
    expect(code, diagnostics).toBe(0);
    const found = sections(stdout);
    for (const title of TITLES) {
      const section = [...found.entries()].find(([heading]) => heading.startsWith(title))?.[1];
      expect(section, `no section "${title}"\n${diagnostics}`).toBeDefined();
      expect(section, diagnostics).not.toContain("FAILED");
      expect(section, `no figure in "${title}"`).toMatch(FIGURE);
    }
  }, 600_000);
});
