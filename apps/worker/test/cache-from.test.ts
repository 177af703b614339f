import type { PushTarget } from "@m1l0/registry";
import { describe, expect, it } from "vitest";
import { prepareCacheFrom, rememberPushedImage } from "../src/cache-from.js";
import type { ImageBuilder, PullRequest } from "../src/docker.js";

// Unit tests with fakes behind our own ports (ImageBuilder, the last-image store); the real
// daemons and registry are exercised by tests/e2e/test/cache-from.e2e.test.ts.
const credentials = { username: "u", password: "p", serveraddress: "registry.test" };
const target: PushTarget = {
  registry: "registry.test",
  repository: "team/app",
  tag: "v2",
  reference: "registry.test/team/app:v2",
  auth: async () => credentials,
};

function fakes(options: { last?: string; origin?: "absent" | "built" | "pulled"; pullError?: Error } = {}) {
  const stored = new Map<string, string>(options.last ? [["registry.test/team/app", options.last]] : []);
  const pulls: PullRequest[] = [];
  const builder: ImageBuilder = {
    build: async () => ({ imageId: "sha256:x" }),
    push: async () => ({ digest: "sha256:y" }),
    ping: async () => undefined,
    run: async () => ({ exitCode: 0, stdout: "", stderr: "", timedOut: false }),
    inspect: async () => (options.origin && options.origin !== "absent" ? { origin: options.origin, contentId: "sha256:c" } : undefined),
    contentId: async () => (options.origin && options.origin !== "absent" ? "sha256:c" : undefined),
    pull: async (request) => {
      pulls.push(request);
      if (options.pullError) throw options.pullError;
    },
  };
  const lastImages = {
    get: async (registry: string, repository: string) => stored.get(`${registry}/${repository}`),
    set: async (registry: string, repository: string, reference: string) => void stored.set(`${registry}/${repository}`, reference),
  };
  const lines: string[] = [];
  return { builder, lastImages, stored, pulls, lines, onLine: (line: string) => lines.push(line) };
}

describe("prepareCacheFrom", () => {
  it("pulls the repository's last image with the target's credentials when the daemon lacks it", async () => {
    const f = fakes({ last: "registry.test/team/app:v1" });
    await expect(prepareCacheFrom(f, target, f.onLine)).resolves.toBe("registry.test/team/app:v1");
    expect(f.pulls).toEqual([{ reference: "registry.test/team/app:v1", auth: credentials }]);
    expect(f.lines.at(-1)).toBe("cache from registry.test/team/app:v1");
  });

  it("uses fresh credentials from the target's auth() (ECR tokens expire)", async () => {
    const f = fakes({ last: "registry.test/team/app:v1" });
    const fresh = { username: "AWS", password: "fresh", serveraddress: "registry.test" };
    await prepareCacheFrom(f, { ...target, auth: async () => fresh }, f.onLine);
    expect(f.pulls[0]?.auth).toEqual(fresh);
  });

  it("does not pull an image the daemon already pulled, and uses it", async () => {
    const f = fakes({ last: "registry.test/team/app:v1", origin: "pulled" });
    await expect(prepareCacheFrom(f, target, f.onLine)).resolves.toBe("registry.test/team/app:v1");
    expect(f.pulls).toEqual([]);
  });

  it("leaves an image this daemon built to the local build cache (no cachefrom, no pull)", async () => {
    const f = fakes({ last: "registry.test/team/app:v1", origin: "built" });
    await expect(prepareCacheFrom(f, target, f.onLine)).resolves.toBeUndefined();
    expect(f.pulls).toEqual([]);
    expect(f.lines).toEqual(["local build cache (the last image registry.test/team/app:v1 was built here)"]);
  });

  it("builds without cache when nothing was pushed yet or the store is off", async () => {
    const f = fakes();
    await expect(prepareCacheFrom(f, target, f.onLine)).resolves.toBeUndefined();
    await expect(prepareCacheFrom({ builder: f.builder }, target, f.onLine)).resolves.toBeUndefined();
    expect(f.lines).toEqual([]);
  });

  it("logs and ignores a failed pull or lookup", async () => {
    const f = fakes({ last: "registry.test/team/app:v1", pullError: new Error("manifest unknown") });
    await expect(prepareCacheFrom(f, target, f.onLine)).resolves.toBeUndefined();
    expect(f.lines).toEqual(["no registry cache: registry.test/team/app:v1 is unavailable (manifest unknown); building without it"]);
    const broken = { ...fakes(), lastImages: { get: async () => Promise.reject(new Error("redis down")), set: async () => undefined } };
    await expect(prepareCacheFrom(broken, target, broken.onLine)).resolves.toBeUndefined();
    expect(broken.lines[0]).toContain("the last image lookup failed (redis down)");
  });

  it("lets an abort (cancel, timeout) through instead of swallowing it", async () => {
    const controller = new AbortController();
    controller.abort();
    const f = fakes({ last: "registry.test/team/app:v1", pullError: new Error("aborted") });
    await expect(prepareCacheFrom(f, target, f.onLine, controller.signal)).rejects.toThrow("aborted");
  });
});

describe("rememberPushedImage", () => {
  it("records the pushed reference as the repository's last image, and reports a failure without throwing", async () => {
    const f = fakes();
    await rememberPushedImage(f, target, () => undefined);
    expect(f.stored.get("registry.test/team/app")).toBe("registry.test/team/app:v2");
    const errors: unknown[] = [];
    await rememberPushedImage({ builder: f.builder, lastImages: { get: async () => undefined, set: async () => Promise.reject(new Error("redis down")) } }, target, (error) => errors.push(error));
    expect(errors).toHaveLength(1);
  });
});
