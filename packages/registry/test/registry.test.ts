import { parseBuildConfig } from "@m1l0/config";
import { describe, expect, it } from "vitest";
import {
  OciRegistryResolver,
  classifyEcrError,
  classifyPushError,
  decodeAuthorizationToken,
  parseRegistryAllowlist,
  parseRegistryCredentials,
  registryHostFromProxyEndpoint,
  withRegistryOverride,
} from "../src/index.js";

const config = (fields: Record<string, unknown> = {}) =>
  parseBuildConfig({ service: "dockerhub", repository: "team/app", source: "https://example.com/r.git", revision: "v1", ...fields });

describe("registry credentials and allowlist", () => {
  it("parses host=username:password entries; passwords may contain ':'", () => {
    expect(parseRegistryCredentials("ghcr.io=bot:p:w, Registry.Example.com:5000=u:x")).toEqual([
      { host: "ghcr.io", username: "bot", password: "p:w" },
      { host: "registry.example.com:5000", username: "u", password: "x" },
    ]);
    expect(parseRegistryCredentials("# comment\nghcr.io=bot:a,b\n", /\n/)).toEqual([{ host: "ghcr.io", username: "bot", password: "a,b" }]);
  });

  it("never echoes a malformed entry (it holds a password)", () => {
    expect(() => parseRegistryCredentials("ghcr.io=secret-without-user")).toThrow(/^registry credential #1 must look like host=username:password$/);
  });

  it("normalises the allowlist", () => {
    expect(parseRegistryAllowlist(" GHCR.io, https://reg.example.com:5000/ ,,")).toEqual(["ghcr.io", "reg.example.com:5000"]);
  });
});

describe("OciRegistryResolver", () => {
  const oci = new OciRegistryResolver({ allowlist: ["reg.example.com:5000", "ghcr.io"], credentials: [{ host: "reg.example.com:5000", username: "u", password: "p" }] });

  it("pushes to the named host with that host's credentials only", async () => {
    const { auth, ...target } = await oci.resolve(config({ registry: "reg.example.com:5000", repository: "a/b/c" }));
    expect({ ...target, auth: await auth() }).toEqual({
      registry: "reg.example.com:5000",
      repository: "a/b/c",
      tag: "v1",
      reference: "reg.example.com:5000/a/b/c:v1",
      auth: { username: "u", password: "p", serveraddress: "reg.example.com:5000" },
    });
    expect(await (await oci.resolve(config({ registry: "ghcr.io" }))).auth()).toBeUndefined();
  });

  it("re-checks the allowlist on the worker", async () => {
    await expect(oci.resolve(config({ registry: "evil.example.com" }))).rejects.toMatchObject({ code: "VALIDATION_FAILED" });
  });

  it("withRegistryOverride routes only requests that name a registry", async () => {
    const fallback = { resolve: async () => ({ registry: "docker.io", repository: "x", tag: "y", reference: "docker.io/x:y", auth: async () => undefined }) };
    const routed = withRegistryOverride(fallback, oci);
    expect((await routed.resolve(config())).registry).toBe("docker.io");
    expect((await routed.resolve(config({ registry: "ghcr.io" }))).registry).toBe("ghcr.io");
  });
});

describe("ECR helpers", () => {
  it("derives the registry host from the token's proxyEndpoint", () => {
    expect(registryHostFromProxyEndpoint("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com")).toBe("123456789012.dkr.ecr.eu-west-1.amazonaws.com");
    expect(registryHostFromProxyEndpoint("http://127.0.0.1:5000")).toBe("127.0.0.1:5000");
  });

  it("decodes base64(user:password) tokens", () => {
    expect(decodeAuthorizationToken(Buffer.from("AWS:abc:def").toString("base64"), "https://x")).toEqual({ username: "AWS", password: "abc:def", serveraddress: "https://x" });
    expect(() => decodeAuthorizationToken(Buffer.from("nocolon").toString("base64"), "https://x")).toThrow(/malformed/);
  });

  it("classifies ECR failures: auth is permanent, throttling and 5xx retry", () => {
    const auth = classifyEcrError({ name: "UnrecognizedClientException", message: "bad", $metadata: { httpStatusCode: 400 } }, "ECR (us-east-1)", "GetAuthorizationToken");
    expect(auth).toMatchObject({ code: "REGISTRY_AUTH_FAILED", retryable: false });
    expect(auth.message).toMatch(/^registry authentication failed for ECR \(us-east-1\)/);
    expect(classifyEcrError({ name: "AccessDeniedException", $metadata: { httpStatusCode: 400 } }, "r", "x").code).toBe("REGISTRY_AUTH_FAILED");
    expect(classifyEcrError({ name: "ThrottlingException", $metadata: { httpStatusCode: 400 } }, "r", "x")).toMatchObject({ code: "REGISTRY_UNREACHABLE", retryable: true });
    expect(classifyEcrError({ name: "ServerException", $metadata: { httpStatusCode: 500 } }, "r", "x")).toMatchObject({ code: "REGISTRY_UNREACHABLE", retryable: true });
    expect(classifyEcrError(Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }), "r", "x")).toMatchObject({ code: "REGISTRY_UNREACHABLE", retryable: true });
    expect(classifyEcrError({ name: "InvalidParameterException", $metadata: { httpStatusCode: 400 } }, "r", "x")).toMatchObject({ code: "VALIDATION_FAILED", retryable: false });
  });

  it("classifies a push refused for credentials as a permanent auth failure", () => {
    const error = classifyPushError("127.0.0.1:5000", "unauthorized: authentication required");
    expect(error).toMatchObject({ code: "REGISTRY_AUTH_FAILED", retryable: false });
    expect(error.message).toMatch(/^registry authentication failed for 127\.0\.0\.1:5000/);
  });
});
