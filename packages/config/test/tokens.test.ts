import { describe, expect, it } from "vitest";
import { apiTokenExpired, createApiToken, formatApiTokenLine, hashApiToken, matchApiToken, parseApiTokenLines, parseTokenExpiry } from "../src/index.js";

describe("API tokens", () => {
  it("creates 256-bit tokens whose entry holds only the sha256", () => {
    const { token, entry, line } = createApiToken("ci", "user");
    expect(token).toMatch(/^m1l0_[A-Za-z0-9_-]{43}$/);
    expect(entry).toEqual({ name: "ci", role: "user", sha256: hashApiToken(token) });
    expect(line).toBe(`ci:user:${entry.sha256}`);
    expect(line).not.toContain(token.slice(5));
    expect(createApiToken("ci", "user").token).not.toBe(token);
    expect(() => createApiToken("no spaces", "user")).toThrow(/token name/);
  });

  it("matches any entry of the set, including the last, and nothing else", () => {
    const tokens = ["a", "b", "c"].map((name, index) => createApiToken(name, index === 0 ? "admin" : "user"));
    const entries = tokens.map((t) => t.entry);
    for (const t of tokens) expect(matchApiToken(entries, t.token)).toEqual(t.entry);
    expect(matchApiToken(entries, "m1l0_unknown")).toBeUndefined();
    expect(matchApiToken(entries, tokens[0]!.entry.sha256)).toBeUndefined();
    expect(matchApiToken(entries, "")).toBeUndefined();
    expect(matchApiToken([], tokens[0]!.token)).toBeUndefined();
  });

  it("parses files and inline lists, naming the line of a bad entry", () => {
    const a = createApiToken("a", "admin").line;
    const b = createApiToken("b", "user").line;
    expect(parseApiTokenLines(`# tokens\n${a}  # ops\n\n${b.toUpperCase().replace("B:USER", "b:user")}\n`, "file").map((e) => e.name)).toEqual(["a", "b"]);
    expect(parseApiTokenLines(`${a}, ${b}`, "inline")).toHaveLength(2);
    expect(() => parseApiTokenLines(`${a}\nc:root:${"0".repeat(64)}`, "file")).toThrow(/^file: line 2: the role must be one of admin, user/);
    expect(() => parseApiTokenLines(`x:user:${"0".repeat(63)}`, "f")).toThrow(/64 hex characters/);
    expect(() => parseApiTokenLines(`x:user:${"0".repeat(64)}:extra`, "f")).toThrow(/the fourth field, the expiry, must be/);
    expect(() => parseApiTokenLines(`${a}\n${a.replace(/^a:/, "a:")}`, "f")).toThrow(/used twice/);
  });

  it("parses an optional expiry (date or instant) and tells expired from live", () => {
    const hash = "a".repeat(64);
    const [dated, timed, plain] = parseApiTokenLines(`a:user:${hash}:2030-05-01\nb:admin:${"b".repeat(64)}:2030-05-01T10:20:30Z\nc:user:${"c".repeat(64)}`, "test");
    expect(dated).toEqual({ name: "a", role: "user", sha256: hash, expiresAt: "2030-05-01T00:00:00Z" });
    expect(timed?.expiresAt).toBe("2030-05-01T10:20:30Z");
    expect(plain?.expiresAt).toBeUndefined();
    expect(apiTokenExpired(dated!, Date.parse("2030-04-30T23:59:59Z"))).toBe(false);
    expect(apiTokenExpired(dated!, Date.parse("2030-05-01T00:00:00Z"))).toBe(true);
    expect(apiTokenExpired(plain!)).toBe(false);
    expect(formatApiTokenLine(timed!)).toBe(`b:admin:${"b".repeat(64)}:2030-05-01T10:20:30Z`);
    expect(() => parseApiTokenLines(`a:user:${hash}:next-week`, "FILE")).toThrow(/FILE: line 1: the fourth field, the expiry, must be a UTC date/);
    expect(() => parseApiTokenLines(`a:user:${hash}:2030-13-45`, "FILE")).toThrow(/the expiry is not a valid date/);
  });

  it("turns --expires durations and dates into instants", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    expect(parseTokenExpiry("30d", now)).toBe("2026-01-31T00:00:00Z");
    expect(parseTokenExpiry("12h", now)).toBe("2026-01-01T12:00:00Z");
    expect(parseTokenExpiry("2w", now)).toBe("2026-01-15T00:00:00Z");
    expect(parseTokenExpiry("2027-02-03", now)).toBe("2027-02-03T00:00:00Z");
    expect(() => parseTokenExpiry("0d", now)).toThrow(/positive duration/);
    expect(() => parseTokenExpiry("2025-01-01", now)).toThrow(/in the past/);
    expect(() => parseTokenExpiry("tomorrow", now)).toThrow(/token expiry: must be a duration/);
  });
});
