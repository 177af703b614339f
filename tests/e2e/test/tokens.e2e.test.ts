import * as grpc from "@grpc/grpc-js";
import { createApiToken } from "@m1l0/config";
import { imageBuilderServiceDefinition } from "@m1l0/proto";
import { ROOT_DIR, freePort, services, spawnNode, stopChild, waitFor } from "@m1l0/testkit";
import type { ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// The built API process with API_TOKENS_FILE and REST over TLS (a self-signed certificate made
// here): tokens revoked by editing the file are refused within 5 s on REST and gRPC, no restart.
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-e2e-tokens-"));
const tokensFile = path.join(dir, "tokens");
const certFile = path.join(dir, "cert.pem");
const keyFile = path.join(dir, "key.pem");
const admin = createApiToken("rot-admin", "admin");
const revoked = createApiToken("rot-revoked", "user");
const expired = createApiToken("rot-expired", "user", { expiresAt: "2021-06-01T00:00:00Z" });
const logs: string[] = [];
let api: ChildProcess;
let restUrl: string;
let grpcAddress: string;
let client: grpc.Client & Record<string, (request: unknown, metadata: grpc.Metadata, callback: (error: grpc.ServiceError | null) => void) => void>;

function writeTokens(lines: string[]): void {
  writeFileSync(`${tokensFile}.next`, `${lines.join("\n")}\n`);
  renameSync(`${tokensFile}.next`, tokensFile);
}

function get(url: string, token?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca: readFileSync(certFile), timeout: 10_000, headers: token ? { authorization: `Bearer ${token}` } : {} }, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString()));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 10 s")));
    req.on("error", reject);
    req.end();
  });
}

const find = (token: string) =>
  new Promise<grpc.status>((resolve) => {
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${token}`);
    client.Find!({ id: "bld_missing" }, metadata, (error) => resolve(error?.code ?? grpc.status.OK));
  });

beforeAll(async () => {
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], { stdio: "ignore" });
  writeTokens([admin.line, revoked.line, expired.line]);
  const [port, grpcPort] = [await freePort(), await freePort()];
  const name = `e2e-tokens-${randomUUID()}`;
  api = spawnNode(path.join(ROOT_DIR, "apps/api/dist/server.js"), {
    PATH: process.env.PATH,
    REDIS_URL: services.redisUrl,
    REDIS_KEY_PREFIX: `${name}:`,
    BUILD_QUEUE_NAME: name,
    CATALOG_OVERRIDES_FILE: path.join(ROOT_DIR, "packages/catalog/local-overrides.yaml"),
    HOST: "127.0.0.1",
    PORT: String(port),
    GRPC_HOST: "127.0.0.1",
    GRPC_PORT: String(grpcPort),
    API_TOKENS_FILE: tokensFile,
    REST_TLS_CERT_FILE: certFile,
    REST_TLS_KEY_FILE: keyFile,
  }, logs, "api");
  restUrl = `https://127.0.0.1:${port}`;
  grpcAddress = `127.0.0.1:${grpcPort}`;
  await waitFor(`the API over HTTPS (${logs.slice(-5).join(" | ")})`, 90_000, async () => {
    if (api.exitCode !== null) throw new Error(`the API exited:\n${logs.join("\n")}`);
    return (await get(`${restUrl}/readyz`).catch(() => ({ status: 0 }))).status === 200;
  });
  const Client = grpc.makeGenericClientConstructor(imageBuilderServiceDefinition(), "ImageBuilderService");
  client = new Client(grpcAddress, grpc.credentials.createInsecure()) as typeof client;
});

afterAll(async () => {
  client?.close();
  await stopChild(api);
  rmSync(dir, { recursive: true, force: true });
});

describe("API tokens on the running API: expiry, revocation without restart, REST over TLS", () => {
  it("serves REST over HTTPS with the configured certificate", async () => {
    expect(await get(`${restUrl}/builds/bld_missing`, admin.token)).toMatchObject({ status: 404 });
    expect(await get(`${restUrl}/builds/bld_missing`)).toMatchObject({ status: 401 });
  });

  it("refuses an expired token with 401 and why, on REST and gRPC", async () => {
    const answer = await get(`${restUrl}/builds/bld_missing`, expired.token);
    expect(answer.status).toBe(401);
    expect(JSON.parse(answer.body)).toMatchObject({ error: { code: "UNAUTHENTICATED", message: "API token rot-expired expired at 2021-06-01T00:00:00Z; ask the operator for a new one" } });
    expect(await find(expired.token)).toBe(grpc.status.UNAUTHENTICATED);
  });

  it("refuses a token deleted from API_TOKENS_FILE within 5 s on REST and gRPC; the others keep working", async () => {
    expect((await get(`${restUrl}/builds/bld_missing`, revoked.token)).status).toBe(404);
    expect(await find(revoked.token)).toBe(grpc.status.NOT_FOUND);
    const start = Date.now();
    writeTokens([admin.line]);
    let tookMs: number | undefined;
    while (Date.now() - start < 20_000) {
      const [rest, rpc] = await Promise.all([get(`${restUrl}/builds/bld_missing`, revoked.token), find(revoked.token)]);
      if (rest.status === 401 && rpc === grpc.status.UNAUTHENTICATED) {
        tookMs = Date.now() - start;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    console.log(`revoked token refused by the API process after ${tookMs} ms (REST over TLS and gRPC)`);
    expect(tookMs, logs.slice(-10).join("\n")).toBeDefined();
    expect(tookMs!).toBeLessThan(5_000);
    expect((await get(`${restUrl}/builds/bld_missing`, admin.token)).status).toBe(404);
    expect(await find(admin.token)).toBe(grpc.status.NOT_FOUND);
    expect(logs.some((line) => line.includes("API tokens reloaded"))).toBe(true);
    // the API logged no token and no hash
    expect(logs.join("\n")).not.toContain(revoked.token);
    expect(logs.join("\n")).not.toContain(revoked.entry.sha256);
  });
});
