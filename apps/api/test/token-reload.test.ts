import * as grpc from "@grpc/grpc-js";
import { createApiToken, formatApiTokenLine } from "@m1l0/config";
import { imageBuilderServiceDefinition } from "@m1l0/proto";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BuildHistory, authenticatorFromEnv, startGrpcServer, watchTokensFile, type RunningGrpcServer, type TokenReloader } from "../src/index.js";
import { buildTestApi, type TestApi } from "./helper.js";

// Tokens revoked or added by editing API_TOKENS_FILE take effect without a restart, on REST and gRPC alike.
const dir = mkdtempSync(path.join(tmpdir(), "m1l0-token-reload-"));
const file = path.join(dir, "tokens");
const keep = createApiToken("keep", "user");
const revoked = createApiToken("revoked", "user");
const expired = createApiToken("old", "user", { expiresAt: "2020-01-01T00:00:00Z" });
const later = createApiToken("later", "admin");

/** Replaces the file the way editors and config management do: write a new one, rename it over. */
function writeTokens(lines: string[]): void {
  const next = `${file}.next`;
  writeFileSync(next, `# API tokens\n${lines.join("\n")}\n`);
  renameSync(next, file);
}

type Client = grpc.Client & Record<string, (request: unknown, metadata: grpc.Metadata, callback: (error: grpc.ServiceError | null) => void) => void>;

describe("API_TOKENS_FILE reload (no restart) and token expiry", () => {
  let api: TestApi;
  let grpcServer: RunningGrpcServer;
  let client: Client;
  let reloader: TokenReloader;
  const logged: string[] = [];
  const logger = { info: (_o: object, message: string) => void logged.push(message), error: (o: object, message: string) => void logged.push(`${message} ${JSON.stringify(o)}`) };

  beforeAll(async () => {
    writeTokens([keep.line, revoked.line, expired.line]);
    const env = { API_TOKENS_FILE: file, API_TOKENS: "", AUTH_DISABLED: false };
    const auth = authenticatorFromEnv(env);
    reloader = watchTokensFile(auth, env, logger, { pollIntervalMs: 1000, signal: undefined });
    api = await buildTestApi({ name: "token-reload", app: () => ({ auth }) });
    grpcServer = await startGrpcServer({ builds: api.builds, history: new BuildHistory(api.store, undefined), redis: api.redis, auth, host: "127.0.0.1", port: 0, logger: { info: () => undefined, error: () => undefined } });
    const Constructor = grpc.makeGenericClientConstructor(imageBuilderServiceDefinition(), "ImageBuilderService");
    client = new Constructor(grpcServer.address, grpc.credentials.createInsecure()) as unknown as Client;
  });

  afterAll(async () => {
    reloader?.close();
    client?.close();
    await grpcServer?.close();
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const rest = async (token: string) => {
    const response = await api.app.inject({ method: "GET", url: "/builds/no-such-build", headers: { authorization: `Bearer ${token}` } });
    return { status: response.statusCode, message: (response.json() as { error: { message: string } }).error.message };
  };
  const rpc = (token: string) =>
    new Promise<{ code: grpc.status; details: string }>((resolve) => {
      const metadata = new grpc.Metadata();
      metadata.set("authorization", `Bearer ${token}`);
      client.Find!({ id: "no-such-build" }, metadata, (error) => resolve({ code: error?.code ?? grpc.status.OK, details: error?.details ?? "" }));
    });

  it("refuses an expired token with 401 and the reason, on REST and gRPC", async () => {
    expect(await rest(keep.token)).toMatchObject({ status: 404 });
    expect(await rest(expired.token)).toEqual({ status: 401, message: "API token old expired at 2020-01-01T00:00:00Z; ask the operator for a new one" });
    const call = await rpc(expired.token);
    expect(call.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(call.details).toMatch(/expired at 2020-01-01T00:00:00Z/);
  });

  it("refuses a revoked token within 5 s of the file changing, REST and gRPC, while the others keep working", async () => {
    expect(await rest(revoked.token)).toMatchObject({ status: 404 });
    expect((await rpc(revoked.token)).code).toBe(grpc.status.NOT_FOUND);
    const start = Date.now();
    writeTokens([keep.line, later.line]);
    // wait on the condition; the deadline is the requirement itself (plus the test's own budget)
    let revokedAt: number | undefined;
    while (Date.now() - start < 15_000) {
      const [answer, call] = await Promise.all([rest(revoked.token), rpc(revoked.token)]);
      if (answer.status === 401 && call.code === grpc.status.UNAUTHENTICATED) {
        revokedAt = Date.now() - start;
        expect(answer.message).toBe("invalid API token");
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    console.log(`token revocation took effect after ${revokedAt} ms`);
    expect(revokedAt).toBeDefined();
    expect(revokedAt!).toBeLessThan(5_000);
    expect(await rest(keep.token)).toMatchObject({ status: 404 });
    expect((await rpc(keep.token)).code).toBe(grpc.status.NOT_FOUND);
    // and a token added to the file is accepted without a restart
    expect(await rest(later.token)).toMatchObject({ status: 404 });
    expect(logged).toContain("API tokens reloaded");
  });

  it("keeps the tokens in force when the new file is broken or empty, and says why", async () => {
    writeTokens([keep.line, "not-a-token-line"]);
    expect(reloader.reload("test")).toBe(false);
    writeTokens([]);
    expect(reloader.reload("test")).toBe(false);
    expect(await rest(keep.token)).toMatchObject({ status: 404 });
    expect(await rest(later.token)).toMatchObject({ status: 404 });
    expect(logged.some((line) => line.startsWith("API_TOKENS_FILE not reloaded") && line.includes("line 3"))).toBe(true);
    expect(logged.some((line) => line.includes("at least one token"))).toBe(true);
    // nothing logged repeats a token or its hash
    expect(logged.join("\n")).not.toContain(keep.entry.sha256);
    writeTokens([formatApiTokenLine(keep.entry)]);
    expect(reloader.reload("test")).toBe(true);
    expect(await rest(later.token)).toMatchObject({ status: 401 });
  });
});

describe("the stat poll alone (where fs.watch misses changes)", () => {
  it("refuses a deleted token within 5 s without fs.watch", async () => {
    const pollDir = mkdtempSync(path.join(tmpdir(), "m1l0-token-poll-"));
    const pollFile = path.join(pollDir, "tokens");
    const a = createApiToken("a", "user");
    const b = createApiToken("b", "user");
    writeFileSync(pollFile, `${a.line}\n${b.line}\n`);
    const env = { API_TOKENS_FILE: pollFile, API_TOKENS: "", AUTH_DISABLED: false };
    const auth = authenticatorFromEnv(env);
    const reloader = watchTokensFile(auth, env, { info: () => undefined, error: () => undefined }, { pollIntervalMs: 500, signal: undefined, fsWatch: false });
    try {
      expect(auth.authenticate(`Bearer ${b.token}`).name).toBe("b");
      // in place this time (the poll sees size and mtime change)
      writeFileSync(pollFile, `${a.line}\n`);
      const start = Date.now();
      while (auth.roleOf("b") !== undefined && Date.now() - start < 10_000) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(Date.now() - start).toBeLessThan(5_000);
      expect(() => auth.authenticate(`Bearer ${b.token}`)).toThrow(/invalid API token/);
      expect(auth.authenticate(`Bearer ${a.token}`).name).toBe("a");
    } finally {
      reloader.close();
      rmSync(pollDir, { recursive: true, force: true });
    }
  });
});

describe("SIGHUP reloads the tokens", () => {
  it("swaps the tokens on SIGHUP although the file's bytes did not change on disk", async () => {
    const one = createApiToken("one", "user");
    const two = createApiToken("two", "user");
    // the reader stands in for the file: only the signal can tell the reloader to look again
    let content = one.line;
    const env = { API_TOKENS_FILE: file, API_TOKENS: "", AUTH_DISABLED: false };
    const auth = authenticatorFromEnv(env, () => content);
    const reloader = watchTokensFile(auth, env, { info: () => undefined, error: () => undefined }, { pollIntervalMs: 60_000, readFile: () => content });
    try {
      expect(auth.authenticate(`Bearer ${one.token}`).name).toBe("one");
      content = two.line;
      process.kill(process.pid, "SIGHUP");
      const start = Date.now();
      while (auth.roleOf("two") === undefined && Date.now() - start < 5_000) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(auth.authenticate(`Bearer ${two.token}`).name).toBe("two");
      expect(() => auth.authenticate(`Bearer ${one.token}`)).toThrow(/invalid API token/);
    } finally {
      reloader.close();
    }
  });
});
