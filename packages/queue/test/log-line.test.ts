import { describe, expect, it } from "vitest";
import { logTailBoundBytes, truncateLogLine } from "../src/log-line.js";

describe("truncateLogLine", () => {
  it("leaves a line within the limit alone", () => {
    expect(truncateLogLine("x".repeat(100), 100)).toBe("x".repeat(100));
  });

  it("cuts a longer line at the limit and says so (never drops it)", () => {
    const line = truncateLogLine(`start-${"y".repeat(20_000)}`, 1_000);
    expect(line.startsWith(`start-${"y".repeat(994)} … [line truncated: 20006 bytes, first 1000 kept]`)).toBe(true);
  });

  it("never splits a UTF-8 character", () => {
    const line = truncateLogLine("é".repeat(600), 1_001); // 2 bytes each: 1,001 falls mid-character
    expect(line.startsWith("é".repeat(500) + " … [line truncated")).toBe(true);
    expect(line).not.toContain("\uFFFD");
  });

  it("states the Redis bound of a build's tail", () => {
    expect(logTailBoundBytes(2_000, 8_192)).toBe(2_100 * (8_192 + 256));
  });
});
