import { createHash, randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ImageLookupError, isLoopbackRegistry, lookupRemoteImage, parseChallenge } from "../src/index.js";

// The real registry started by scripts/services.sh (htpasswd auth).
const registry = process.env.REGISTRY_HOST ?? "127.0.0.1:5000";
const username = process.env.REGISTRY_USERNAME ?? "m1l0";
const password = process.env.REGISTRY_PASSWORD ?? "m1l0-local-registry-pw";
const auth = { username, password, serveraddress: registry };
const authorization = `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
const repository = "m1l0test/lookup";

/** Pushes an image made of just a config (no layers) with plain registry API calls; returns the manifest digest. */
async function pushConfigOnlyImage(tag: string, labels: Record<string, string>): Promise<string> {
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: { Labels: labels }, rootfs: { type: "layers", diff_ids: [] } }));
  const configDigest = `sha256:${createHash("sha256").update(config).digest("hex")}`;
  const start = await fetch(`http://${registry}/v2/${repository}/blobs/uploads/`, { method: "POST", headers: { authorization } });
  expect(start.status).toBe(202);
  const location = new URL(start.headers.get("location")!, `http://${registry}`);
  location.searchParams.set("digest", configDigest);
  const put = await fetch(location, { method: "PUT", headers: { authorization, "content-type": "application/octet-stream" }, body: config });
  expect(put.status).toBe(201);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.docker.distribution.manifest.v2+json",
    config: { mediaType: "application/vnd.docker.container.image.v1+json", size: config.length, digest: configDigest },
    layers: [],
  });
  const pushed = await fetch(`http://${registry}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { authorization, "content-type": "application/vnd.docker.distribution.manifest.v2+json" },
    body: manifest,
  });
  expect(pushed.status).toBe(201);
  return pushed.headers.get("docker-content-digest")!;
}

describe("lookupRemoteImage (real registry)", () => {
  it("reads the digest and labels a tag holds, authenticating as docker does", async () => {
    const tag = `t-${randomUUID().slice(0, 8)}`;
    const digest = await pushConfigOnlyImage(tag, { "ai.m1l0.build-key": "sha256:abc", other: "x" });
    const found = await lookupRemoteImage({ registry, repository, tag }, { auth });
    expect(found).toEqual({ digest, labels: { "ai.m1l0.build-key": "sha256:abc", other: "x" } });
  });

  it("a tag that does not exist is undefined", async () => {
    expect(await lookupRemoteImage({ registry, repository, tag: `absent-${randomUUID().slice(0, 8)}` }, { auth })).toBeUndefined();
  });

  it("wrong credentials or an unreachable registry are lookup errors, never 'absent'", async () => {
    await expect(lookupRemoteImage({ registry, repository, tag: "x" }, { auth: { ...auth, password: "wrong" } })).rejects.toBeInstanceOf(ImageLookupError);
    await expect(lookupRemoteImage({ registry, repository, tag: "x" })).rejects.toBeInstanceOf(ImageLookupError);
    await expect(lookupRemoteImage({ registry: "127.0.0.1:9", repository, tag: "x" }, { auth })).rejects.toBeInstanceOf(ImageLookupError);
  });
});

describe("registry helpers", () => {
  it("parses bearer and basic challenges", () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull"')).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/python:pull" },
    });
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({ scheme: "basic", params: { realm: "Registry Realm" } });
  });

  it("treats only loopback registries as plain HTTP by default", () => {
    expect(isLoopbackRegistry("127.0.0.1:5000")).toBe(true);
    expect(isLoopbackRegistry("localhost:5000")).toBe(true);
    expect(isLoopbackRegistry("[::1]:5000")).toBe(true);
    expect(isLoopbackRegistry("registry.example.com")).toBe(false);
    expect(isLoopbackRegistry("10.0.0.5:5000")).toBe(false);
  });
});
