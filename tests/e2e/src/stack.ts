import { spawn, type ChildProcess } from "node:child_process";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, mkdirSync, cpSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createApiToken } from "@m1l0/config";
import { registerApiToken } from "./client.js";

export const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** Addresses of the real services started by scripts/services.sh (same defaults). */
export const services = {
  redisUrl: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
  registryHost: process.env.REGISTRY_HOST ?? "127.0.0.1:5000",
  registryUsername: process.env.REGISTRY_USERNAME ?? "m1l0",
  registryPassword: process.env.REGISTRY_PASSWORD ?? "m1l0-local-registry-pw",
  gitServerUrl: process.env.GIT_SERVER_URL ?? "http://127.0.0.1:8174",
  gitFixturesDir: process.env.GIT_FIXTURES_DIR ?? "/var/lib/m1l0-dev/git",
  gitPrivateUsername: process.env.GIT_PRIVATE_USERNAME ?? "m1l0-bot",
  gitPrivateToken: process.env.GIT_PRIVATE_TOKEN ?? "m1l0-local-git-token",
  s3Endpoint: process.env.S3_ENDPOINT ?? "http://127.0.0.1:4569",
  s3Bucket: process.env.S3_BUCKET ?? "m1l0-builds",
  baseImageBusybox: process.env.BASE_IMAGE_BUSYBOX ?? "m1l0-local/busybox:latest",
};

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
    });
  });
}

/** The API tokens of one stack: what clients send (the API only gets their hashes). */
export interface StackTokens {
  /** admin token: every build, the dashboard, metrics (the e2e helpers send this one) */
  admin: string;
  /** two user tokens, each seeing only its own builds */
  alice: string;
  bob: string;
  /** `API_TOKENS` for another API process that should accept the same tokens */
  apiTokensEnv: string;
}

/** Fresh tokens for a stack (random per stack, so one stack's tokens open no other). */
export function createStackTokens(): StackTokens {
  const admin = createApiToken("e2e-admin", "admin");
  const alice = createApiToken("e2e-alice", "user");
  const bob = createApiToken("e2e-bob", "user");
  return { admin: admin.token, alice: alice.token, bob: bob.token, apiTokensEnv: [admin.line, alice.line, bob.line].join(",") };
}

export interface RunningStack {
  apiUrl: string;
  /** the admin token (sent by apiFetch and the client helpers for apiUrl) */
  token: string;
  tokens: StackTokens;
  /** host:port of the API's plaintext gRPC server */
  grpcAddress: string;
  queueName: string;
  /** Redis namespace of this stack's records and events (each stack has its own) */
  keyPrefix: string;
  logs: string[];
  /** every worker process started so far: [0] is the default one, then `extraWorkers`, then startWorker() */
  workers: ChildProcess[];
  /** starts one more worker on the same queue; `env` overrides e.g. WORKER_ID, DOCKER_SOCKET */
  startWorker(env?: NodeJS.ProcessEnv): ChildProcess;
  stop(): Promise<void>;
}

function spawnNode(script: string, env: NodeJS.ProcessEnv, logs: string[], label: string): ChildProcess {
  const child = spawn(process.execPath, [script], { env, stdio: ["ignore", "pipe", "pipe"] });
  // whole lines only: a chunk may end mid-line
  const collector = () => {
    let rest = "";
    return (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split("\n");
      rest = lines.pop() ?? "";
      logs.push(...lines.filter(Boolean).map((line) => `${label}: ${line}`));
    };
  };
  child.stdout?.on("data", collector());
  child.stderr?.on("data", collector());
  return child;
}

/**
 * Starts the built API and worker (apps/*\/dist) as separate processes with a queue of
 * their own, configured like scripts/stack.sh. `workerEnv` / `apiEnv` add to or override each process's env.
 */
export async function startStack(
  options: {
    workerEnv?: NodeJS.ProcessEnv;
    apiEnv?: NodeJS.ProcessEnv;
    concurrency?: number;
    /** more workers on the same queue, each env added on top of the first worker's (fleet tests) */
    extraWorkers?: NodeJS.ProcessEnv[];
    /** a Redis other than the shared one (e.g. one a test restarts) */
    redisUrl?: string;
  } = {},
): Promise<RunningStack> {
  const port = await freePort();
  const grpcPort = await freePort();
  const queueName = `e2e-${randomUUID()}`;
  const keyPrefix = `${queueName}:`;
  const tokenDir = mkdtempSync(path.join(tmpdir(), "m1l0-secret-"));
  const tokenFile = path.join(tokenDir, "registry-token");
  writeFileSync(tokenFile, services.registryPassword, { mode: 0o600 });
  const common: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    REDIS_URL: options.redisUrl ?? services.redisUrl,
    BUILD_QUEUE_NAME: queueName,
    REDIS_KEY_PREFIX: keyPrefix,
    ALLOW_HTTP_SOURCES: "true",
    // the local git server is on loopback, which sources may only use when allowlisted (API and workers alike)
    SOURCE_HOST_ALLOWLIST: "127.0.0.0/8,::1",
    CATALOG_OVERRIDES_FILE: path.join(ROOT_DIR, "packages/catalog/local-overrides.yaml"),
    LOG_LEVEL: "info",
  };
  const logs: string[] = [];
  // every e2e stack runs with authentication on; the submission limit is out of the way unless a test sets one
  const tokens = createStackTokens();
  const apiAuthEnv: NodeJS.ProcessEnv = { API_TOKENS: tokens.apiTokensEnv, SUBMIT_RATE_LIMIT_MAX: "100000" };
  const api = spawnNode(path.join(ROOT_DIR, "apps/api/dist/server.js"), { ...common, ...apiAuthEnv, HOST: "127.0.0.1", PORT: String(port), GRPC_HOST: "127.0.0.1", GRPC_PORT: String(grpcPort), ...options.apiEnv }, logs, "api");
  const workerEnv: NodeJS.ProcessEnv = {
    ...common,
    WORKER_CONCURRENCY: String(options.concurrency ?? 2),
    DOCKERHUB_REGISTRY: services.registryHost,
    DOCKERHUB_USERNAME: services.registryUsername,
    DOCKERHUB_TOKEN_FILE: tokenFile,
    GIT_CREDENTIALS: `${new URL(services.gitServerUrl).host}=${services.gitPrivateUsername}:${services.gitPrivateToken}`,
    S3_ENDPOINT: services.s3Endpoint,
    S3_FORCE_PATH_STYLE: "true",
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    AWS_REGION: "us-east-1",
    BUILD_NETWORK: "none",
    // each stack's image cache only ever collects the images its own workers built
    IMAGE_CACHE_SCOPE: queueName,
    ...options.workerEnv,
  };
  const workers: ChildProcess[] = [];
  const startWorker = (env: NodeJS.ProcessEnv = {}): ChildProcess => {
    const label = workers.length === 0 ? "worker" : `worker${workers.length + 1}`;
    const child = spawnNode(path.join(ROOT_DIR, "apps/worker/dist/main.js"), { ...workerEnv, ...env }, logs, label);
    workers.push(child);
    return child;
  };
  startWorker();
  for (const env of options.extraWorkers ?? []) startWorker(env);
  const apiUrl = `http://127.0.0.1:${port}`;
  registerApiToken(apiUrl, tokens.admin);
  const deadline = Date.now() + 90_000;
  for (;;) {
    try {
      if ((await fetch(`${apiUrl}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline || api.exitCode !== null) throw new Error(`API did not start:\n${logs.join("\n")}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const stopChild = (child: ChildProcess) =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve(); // exited, or killed by a test
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
    });
  return {
    apiUrl,
    token: tokens.admin,
    tokens,
    grpcAddress: `127.0.0.1:${grpcPort}`,
    queueName,
    keyPrefix,
    logs,
    workers,
    startWorker,
    async stop() {
      await Promise.all([stopChild(api), ...workers.map(stopChild)]);
      rmSync(tokenDir, { recursive: true, force: true });
    },
  };
}

/** Creates a bare repo served by the git server from a directory, with optional edits. */
export function createGitFixture(sourceDir: string, edits: Record<string, string> = {}, name = `e2e-${randomUUID()}`): { url: string; dir: string; cleanup(): void } {
  const work = mkdtempSync(path.join(tmpdir(), "m1l0-fixture-"));
  cpSync(sourceDir, work, { recursive: true });
  for (const [file, content] of Object.entries(edits)) {
    mkdirSync(path.dirname(path.join(work, file)), { recursive: true });
    writeFileSync(path.join(work, file), content);
  }
  const git = (...args: string[]) => execFileSync("git", ["-c", "user.name=e2e", "-c", "user.email=e2e@localhost", ...args], { cwd: work, stdio: "pipe" });
  git("init", "-q", "-b", "main");
  git("add", "-A");
  git("commit", "-q", "-m", "fixture");
  const parent = path.join(services.gitFixturesDir, name);
  const bare = path.join(parent, "repo.git");
  mkdirSync(parent, { recursive: true });
  execFileSync("git", ["clone", "-q", "--bare", work, bare]);
  execFileSync("git", ["-C", bare, "symbolic-ref", "HEAD", "refs/heads/main"]);
  rmSync(work, { recursive: true, force: true });
  return { url: `${services.gitServerUrl}/${name}/repo.git`, dir: parent, cleanup: () => rmSync(parent, { recursive: true, force: true }) };
}

/** A served git repo whose only file is a Dockerfile `FROM busybox` + `RUN echo <marker> && sleep <seconds>`. */
export function sleeperRepo(marker: string, seconds: number): { url: string; cleanup(): void } {
  const empty = mkdtempSync(path.join(tmpdir(), "m1l0-empty-"));
  try {
    return createGitFixture(empty, { Dockerfile: `FROM ${services.baseImageBusybox}\nRUN echo ${marker} && sleep ${seconds}\n` });
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
}
