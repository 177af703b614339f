import { describe, expect, it } from "vitest";
import { LineJoiner, collapseCarriageReturns } from "../src/log-lines.js";

function joined(chunks: string[]): string[] {
  const lines: string[] = [];
  const joiner = new LineJoiner((line) => lines.push(line));
  for (const chunk of chunks) joiner.write(chunk);
  joiner.end();
  return lines;
}

describe("LineJoiner (the daemon's output stream → whole lines)", () => {
  it("joins a line the daemon cut across chunks, wherever the cut falls", () => {
    const text = Array.from({ length: 500 }, (_, i) => `line-${String(i).padStart(6, "0")}`).join("\n") + "\n";
    for (const size of [1, 3, 7, 64, 1000]) {
      const chunks = text.match(new RegExp(`[\\s\\S]{1,${size}}`, "g"))!;
      const lines = joined(chunks);
      expect(lines).toHaveLength(500);
      lines.forEach((line, i) => expect(line).toBe(`line-${String(i).padStart(6, "0")}`));
    }
  });

  it("joins the issue's broken pairs back: `l` + `ine-134529`, `1372` + `59`", () => {
    expect(joined(["line-134528\nl", "ine-134529\nline-1372", "59\n"])).toEqual(["line-134528", "line-134529", "line-137259"]);
  });

  it("emits a last line without a newline at the end", () => {
    expect(joined(["a\nb"])).toEqual(["a", "b"]);
  });

  it("collapses a carriage-return progress bar to its last state, also across chunks", () => {
    const bar = Array.from({ length: 1000 }, (_, i) => `\r${"#".repeat(i % 50)} ${i / 10}%`).join("");
    const lines = joined(["Downloading", bar.slice(0, 777), bar.slice(777), "\rdone 100%\n", "next\n"]);
    expect(lines).toEqual(["done 100%", "next"]);
  });

  it("treats CRLF as a newline and strips ANSI colours", () => {
    expect(joined(["\x1b[91mred\x1b[0m\r\n", "plain\r\n"])).toEqual(["red", "plain"]);
  });

  it("drops blank lines and emits an endless line in bounded pieces", () => {
    const lines: string[] = [];
    const joiner = new LineJoiner((line) => lines.push(line), 100);
    joiner.write("\n\n   \n");
    for (let i = 0; i < 10; i++) joiner.write("x".repeat(50));
    joiner.end();
    expect(lines.join("")).toBe("x".repeat(500));
    expect(Math.max(...lines.map((line) => line.length))).toBeLessThanOrEqual(150);
  });

  it("collapseCarriageReturns keeps the state after the last redraw", () => {
    expect(collapseCarriageReturns("a\rb\rc")).toBe("c");
    expect(collapseCarriageReturns("abc\r")).toBe("abc");
    expect(collapseCarriageReturns("plain")).toBe("plain");
  });
});
