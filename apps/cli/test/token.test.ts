import { hashApiToken, parseApiTokenLines } from "@m1l0/config";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { EXIT_OK, EXIT_USAGE, runCli, type Output } from "../src/index.js";

function capture(): Output & { text: string } {
  const out = { text: "", isTTY: false, columns: 80, write: (chunk: string) => (out.text += chunk) };
  return out;
}
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-cli-token-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const env = { apiUrl: "http://127.0.0.1:1", token: undefined, tokenFile: undefined, dumbTerminal: true };

describe("m1l0 token create", () => {
  it("prints a fresh token and the hash line the API accepts", async () => {
    const stdout = capture();
    const stderr = capture();
    expect(await runCli(["token", "create", "--name", "ci", "--role", "admin"], { stdout, stderr, env })).toBe(EXIT_OK);
    const token = /^token: (m1l0_[A-Za-z0-9_-]{43})$/m.exec(stdout.text)?.[1];
    const line = /^line: +(\S+)$/m.exec(stdout.text)?.[1];
    expect(token).toBeDefined();
    expect(line).toBe(`ci:admin:${hashApiToken(token!)}`);
    expect(parseApiTokenLines(line!, "test")).toEqual([{ name: "ci", role: "admin", sha256: hashApiToken(token!) }]);
    const again = capture();
    await runCli(["token", "create", "--name", "ci"], { stdout: again, stderr: capture(), env });
    expect(again.text).not.toContain(token!);
    expect(again.text).toMatch(/^line: +ci:user:/m);
  });

  it("with --out writes only the token to a new 0600 file and prints only the line", async () => {
    const file = path.join(dir, "token");
    const stdout = capture();
    expect(await runCli(["token", "create", "--name", "dev", "--out", file], { stdout, stderr: capture(), env })).toBe(EXIT_OK);
    const token = readFileSync(file, "utf8").trim();
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(stdout.text).toBe(`dev:user:${hashApiToken(token)}\n`);
    // never overwrites
    const stderr = capture();
    expect(await runCli(["token", "create", "--name", "dev", "--out", file], { stdout: capture(), stderr, env })).not.toBe(EXIT_OK);
    expect(readFileSync(file, "utf8").trim()).toBe(token);
  });

  it("with --expires 30d writes an expiry 30 days out into the line, which the API's parser keeps", async () => {
    const stdout = capture();
    const before = Date.now();
    expect(await runCli(["token", "create", "--name", "temp", "--expires", "30d", "--json"], { stdout, stderr: capture(), env })).toBe(EXIT_OK);
    const printed = JSON.parse(stdout.text) as { token: string; line: string; expiresAt: string };
    const expires = Date.parse(printed.expiresAt);
    expect(expires - before).toBeGreaterThanOrEqual(30 * 86_400_000 - 1000);
    expect(expires - Date.now()).toBeLessThanOrEqual(30 * 86_400_000);
    expect(printed.line).toBe(`temp:user:${hashApiToken(printed.token)}:${printed.expiresAt}`);
    expect(parseApiTokenLines(printed.line, "test")).toEqual([{ name: "temp", role: "user", sha256: hashApiToken(printed.token), expiresAt: printed.expiresAt }]);
    const dated = capture();
    expect(await runCli(["token", "create", "--name", "dated", "--expires", "2099-01-31"], { stdout: dated, stderr: capture(), env })).toBe(EXIT_OK);
    expect(dated.text).toMatch(/^line: +dated:user:[0-9a-f]{64}:2099-01-31T00:00:00Z$/m);
  });

  it.each([
    [["token", "create", "--name", "x", "--expires", "soon"], /--expires: must be a duration such as 30d/],
    [["token", "create", "--name", "x", "--expires", "2001-01-01"], /--expires: is in the past/],
    [["token", "create"], /needs --name/],
    [["token", "create", "--name", "x", "--role", "root"], /--role must be one of admin, user/],
    [["token", "create", "--name", "bad name!"], /token name: must be/],
    [["token", "list"], /usage: m1l0 token create/],
  ])("refuses %j", async (argv, message) => {
    const stderr = capture();
    expect(await runCli(argv, { stdout: capture(), stderr, env })).toBe(EXIT_USAGE);
    expect(stderr.text).toMatch(message);
  });

  it("reads the token from M1L0_TOKEN_FILE, and says so when it cannot", async () => {
    const stderr = capture();
    expect(await runCli(["list"], { stdout: capture(), stderr, env: { ...env, tokenFile: path.join(dir, "missing") } })).toBe(EXIT_USAGE);
    expect(stderr.text).toMatch(/cannot read M1L0_TOKEN_FILE .*missing: ENOENT/);
  });
});
