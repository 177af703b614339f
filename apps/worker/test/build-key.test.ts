import { parseBuildConfig } from "@m1l0/config";
import { describe, expect, it } from "vitest";
import { computeBuildKey } from "../src/build-key.js";

const config = parseBuildConfig({
  service: "dockerhub",
  repository: "me/app",
  revision: "v1",
  framework: "python",
  pyversion: "3.11",
  resource: "cpu",
  entry: "main.py",
  source: "https://git.example.com/app.git",
});
const base = { image: "python:3.11-slim", content: "sha256:aaa" };
const key = computeBuildKey({ config, source: "git:1111111111111111111111111111111111111111", base });

describe("computeBuildKey", () => {
  it("is a stable sha256 of its inputs", () => {
    expect(key).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(computeBuildKey({ config: { ...config }, source: "git:1111111111111111111111111111111111111111", base: { ...base } })).toBe(key);
  });

  it("changes with the operator's apt sources, and not when none are set", () => {
    const source = "git:1111111111111111111111111111111111111111";
    expect(computeBuildKey({ config, source, base: { ...base, aptSources: [] } })).toBe(key);
    const mirrored = computeBuildKey({ config, source, base: { ...base, aptSources: ["deb http://mirror.a/debian bookworm main"] } });
    expect(mirrored).not.toBe(key);
    expect(computeBuildKey({ config, source, base: { ...base, aptSources: ["deb http://mirror.b/debian bookworm main"] } })).not.toBe(mirrored);
  });

  it("does not depend on key order or on the time limit", () => {
    const reordered = Object.fromEntries(Object.entries(config).reverse()) as typeof config;
    expect(computeBuildKey({ config: reordered, source: "git:1111111111111111111111111111111111111111", base })).toBe(key);
    expect(computeBuildKey({ config: { ...config, timeout: 60 }, source: "git:1111111111111111111111111111111111111111", base })).toBe(key);
  });

  const changes: Array<[string, Partial<typeof config>]> = [
    ["entry", { entry: "train.py" }],
    ["pyversion", { pyversion: "3.10" }],
    ["resource", { resource: "gpu" }],
    ["framework version", { version: "2.6.0" }],
    ["tags", { tags: [{ Key: "team", Value: "vision" }] }],
    ["ignores", { ignores: ["data/"] }],
    ["dockerfile", { dockerfile: "Dockerfile" }],
    ["revision (the image's version label and tag)", { revision: "v2" }],
    ["repository", { repository: "me/other" }],
  ];
  it.each(changes)("changes with %s", (_name, patch) => {
    expect(computeBuildKey({ config: { ...config, ...patch }, source: "git:1111111111111111111111111111111111111111", base })).not.toBe(key);
  });

  it("changes with the source content and the base image content", () => {
    expect(computeBuildKey({ config, source: "git:2222222222222222222222222222222222222222", base })).not.toBe(key);
    expect(computeBuildKey({ config, source: "git:1111111111111111111111111111111111111111", base: { ...base, content: "sha256:bbb" } })).not.toBe(key);
    expect(computeBuildKey({ config, source: "git:1111111111111111111111111111111111111111", base: { ...base, content: undefined } })).not.toBe(key);
  });
});
