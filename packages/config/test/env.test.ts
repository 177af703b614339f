import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { resolveFileVariables } from "../src/index.js";

const dir = mkdtempSync(path.join(tmpdir(), "m1l0-env-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const read = (file: string) => readFileSync(file, "utf8");

describe("resolveFileVariables", () => {
  it("takes a secret from the file NAME_FILE names, without its trailing newline", () => {
    const file = path.join(dir, "redis-url");
    writeFileSync(file, "redis://:s3cret@redis:6379\n");
    const source = { REDIS_URL_FILE: file, OTHER: "x" };
    const resolved = resolveFileVariables(source, ["REDIS_URL"], read);
    expect(resolved.REDIS_URL).toBe("redis://:s3cret@redis:6379");
    expect(resolved.OTHER).toBe("x");
    expect(source).toEqual({ REDIS_URL_FILE: file, OTHER: "x" }); // the input is not changed
  });

  it("leaves a variable without a _FILE form alone", () => {
    expect(resolveFileVariables({ REDIS_URL: "redis://a:6379" }, ["REDIS_URL"], read).REDIS_URL).toBe("redis://a:6379");
  });

  it("refuses both forms at once, and names a file it cannot read", () => {
    expect(() => resolveFileVariables({ REDIS_URL: "redis://a", REDIS_URL_FILE: "/x" }, ["REDIS_URL"], read)).toThrow(/either REDIS_URL or REDIS_URL_FILE/);
    expect(() => resolveFileVariables({ AWS_SECRET_ACCESS_KEY_FILE: path.join(dir, "missing") }, ["AWS_SECRET_ACCESS_KEY"], read)).toThrow(/cannot read AWS_SECRET_ACCESS_KEY_FILE .*missing/);
  });
});
