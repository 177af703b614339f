import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { restTls } from "../src/index.js";
import { buildTestApi, type TestApi } from "./helper.js";

// REST over TLS from REST_TLS_CERT_FILE/REST_TLS_KEY_FILE, checked with a self-signed certificate made here by openssl.
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-rest-tls-"));
const certFile = path.join(dir, "cert.pem");
const keyFile = path.join(dir, "key.pem");

function get(url: string, options: { ca?: Buffer } = {}): Promise<{ status: number; body: string; protocol: string }> {
  const send = url.startsWith("https:") ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { ...(options.ca ? { ca: options.ca } : {}), timeout: 10_000 }, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString()));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body, protocol: url.split(":")[0]! }));
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 10 s")));
    req.on("error", reject);
    req.end();
  });
}

describe("REST over TLS (self-signed certificate)", () => {
  let api: TestApi;
  let port: number;

  beforeAll(async () => {
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", keyFile, "-out", certFile, "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], { stdio: "ignore" });
    const https = restTls({ REST_TLS_CERT_FILE: certFile, REST_TLS_KEY_FILE: keyFile });
    api = await buildTestApi({ name: "rest-tls", app: () => (https ? { https } : {}) });
    await api.app.listen({ host: "127.0.0.1", port: 0 });
    port = (api.app.server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves HTTPS that a client trusting the certificate accepts", async () => {
    const answer = await get(`https://127.0.0.1:${port}/healthz`, { ca: readFileSync(certFile) });
    expect(answer).toEqual({ status: 200, body: JSON.stringify({ status: "ok" }), protocol: "https" });
  });

  it("is refused by a client that does not trust the certificate, and does not speak plain HTTP", async () => {
    await expect(get(`https://127.0.0.1:${port}/healthz`)).rejects.toThrow(/self[- ]signed certificate/);
    await expect(get(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
  });

  it("needs both files, and says which one is missing or unreadable", () => {
    expect(restTls({})).toBeUndefined();
    expect(() => restTls({ REST_TLS_CERT_FILE: certFile })).toThrow("REST_TLS_KEY_FILE: is required when the other REST TLS file is set");
    expect(() => restTls({ REST_TLS_KEY_FILE: keyFile })).toThrow("REST_TLS_CERT_FILE: is required");
    expect(() => restTls({ REST_TLS_CERT_FILE: path.join(dir, "missing.pem"), REST_TLS_KEY_FILE: keyFile })).toThrow(/REST_TLS_CERT_FILE: cannot read .*missing\.pem: ENOENT/);
  });
});
