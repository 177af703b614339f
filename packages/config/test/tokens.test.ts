import { describe, expect, it } from "vitest";
import { createApiToken, hashApiToken, matchApiToken, parseApiTokenLines } from "../src/index.js";

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
    expect(() => parseApiTokenLines(`x:user:${"0".repeat(64)}:extra`, "f")).toThrow(/too many/);
    expect(() => parseApiTokenLines(`${a}\n${a.replace(/^a:/, "a:")}`, "f")).toThrow(/used twice/);
  });
});
