import path from "node:path";
import { describe, expect, it } from "vitest";
import { formatBytes, isInside } from "../src/index.js";

describe("isInside", () => {
  it("takes the root itself and what lies beneath it, including names that merely start with dots", () => {
    expect(isInside("/srv/app", "/srv/app")).toBe(true);
    expect(isInside("/srv/app", "/srv/app/src/main.py")).toBe(true);
    expect(isInside("/srv/app", "/srv/app/..hidden")).toBe(true);
  });

  it("refuses the parent, siblings with a common prefix and other trees", () => {
    expect(isInside("/srv/app", "/srv")).toBe(false);
    expect(isInside("/srv/app", "/srv/app-other/x")).toBe(false);
    expect(isInside("/srv/app", path.resolve("/srv/app", "../etc/passwd"))).toBe(false);
    expect(isInside("/srv/app", "/etc")).toBe(false);
  });
});

describe("formatBytes", () => {
  it("names small sizes in bytes and larger ones in binary units", () => {
    expect(formatBytes(999)).toBe("999 bytes");
    expect(formatBytes(64 * 1024)).toBe("64.0 KiB");
    expect(formatBytes(10 * 1024 ** 2)).toBe("10.0 MiB");
    expect(formatBytes(2 * 1024 ** 3)).toBe("2.00 GiB");
  });
});
