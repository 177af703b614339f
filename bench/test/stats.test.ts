import { describe, expect, it } from "vitest";
import { formatBytes, formatMs, formatRatio, formatSummary, median, quantile, ratio, renderTable, summarize } from "../src/index.js";

describe("quantile", () => {
  it("interpolates between closest ranks", () => {
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantile([10, 20, 30, 40, 50], 0.25)).toBe(20);
    expect(quantile([0, 100], 0.99)).toBeCloseTo(99);
  });

  it("does not depend on input order and does not reorder the input", () => {
    const samples = [5, 1, 4, 2, 3];
    expect(median(samples)).toBe(3);
    expect(samples).toEqual([5, 1, 4, 2, 3]);
  });

  it("returns the extremes at 0 and 1 and the only value of one sample", () => {
    expect(quantile([3, 9, 1], 0)).toBe(1);
    expect(quantile([3, 9, 1], 1)).toBe(9);
    expect(quantile([7], 0.99)).toBe(7);
  });

  it("refuses empty input and out-of-range quantiles", () => {
    expect(() => quantile([], 0.5)).toThrow(RangeError);
    expect(() => quantile([1], 1.5)).toThrow(RangeError);
    expect(() => quantile([1], Number.NaN)).toThrow(RangeError);
  });
});

describe("summarize", () => {
  it("reports median, extremes and tail percentiles", () => {
    const samples = Array.from({ length: 101 }, (_, index) => 100 - index);
    const summary = summarize(samples);
    expect(summary).toMatchObject({ n: 101, median: 50, min: 0, max: 100, p10: 10, p90: 90, p99: 99, mean: 50 });
  });

  it("refuses no samples", () => {
    expect(() => summarize([])).toThrow(RangeError);
  });
});

describe("ratio and formatting", () => {
  it("divides ours by the baseline, undefined without a usable baseline", () => {
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(3, 0)).toBeUndefined();
    expect(ratio(undefined, 2)).toBeUndefined();
    expect(formatRatio(1.5)).toBe("1.50×");
    expect(formatRatio(undefined)).toBe("–");
  });

  it("formats times and sizes with sensible units", () => {
    expect(formatMs(3.21)).toBe("3.2 ms");
    expect(formatMs(250)).toBe("250 ms");
    expect(formatMs(1234)).toBe("1.23 s");
    expect(formatMs(65_000)).toBe("65.0 s");
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(64 * 1024 * 1024)).toBe("64.0 MiB");
  });

  it("shows the spread beside the median", () => {
    expect(formatSummary(summarize([3000, 1000, 2000]), formatMs)).toBe("2.00 s (1.00 s–3.00 s, n=3)");
    expect(formatSummary(summarize([5]), formatMs)).toBe("5.0 ms (n=1)");
  });
});

describe("renderTable", () => {
  it("renders a markdown table with notes and escapes pipes", () => {
    const text = renderTable({ title: "T", columns: ["a", "b"], rows: [["x|y", "1"]], notes: ["note"] });
    expect(text).toBe("## T\n\n| a | b |\n|---|---|\n| x\\|y | 1 |\n\n- note\n");
  });
});

describe("cachedSteps", () => {
  it("lists the instructions the classic builder served from cache", async () => {
    const { cachedSteps } = await import("../src/overhead.js");
    const output = ["Step 1/4 : FROM base", "Step 2/4 : ENV A=1", " ---> Using cache", " ---> 1234", "Step 3/4 : COPY requirements.txt ./", " ---> 5678", "Step 4/4 : RUN pip install", " ---> Using cache"].join("\n");
    expect(cachedSteps(output)).toEqual(["ENV", "RUN"]);
  });
});
