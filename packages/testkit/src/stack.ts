import type { ChildProcess } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { registerApiToken } from "./api.js";
import { spawnNode, stopChild } from "./process.js";
import { ROOT_DIR, freePort, services } from "./services.js";

/** The API tokens of one stack: what clients send (the API only gets their hashes). */
export interface StackTokens {
  /** admin token: every build, the dashboard, metrics (apiFetch sends this one) */
  admin: string;
  /** two user tokens, each seeing only its own builds */
  alice: string;
  bob: string;
  /** `API_TOKENS` for another API process that should accept the same tokens */
  apiTokensEnv: string;
}

/**
 * A token and its API_TOKENS line, in the documented operator format (`name:role:sha256hex` of
 * an `m1l0_…` token). Written here rather than imported: @m1l0/config's own tests use this kit.
 */
function createApiToken(name: string, role: "admin" | "user"): { token: string; line: string } {
  const token = `m1l0_${randomBytes(32).toString("base64url")}`;
  return { token, line: `${name}:${role}:${createHash("sha256").update(token, "utf8").digest("hex")}` };
}

/** Fresh tokens for a stack (random per stack, so one stack's tokens open no other). */
export function createStackTokens(prefix = "e2e"): StackTokens {
  const admin = createApiToken(`${prefix}-admin`, "admin");
  const alice = createApiToken(`${prefix}-alice`, "user");
  const bob = createApiToken(`${prefix}-bob`, "user");
  return { admin: admin.token, alice: alice.token, bob: bob.token, apiTokensEnv: [admin.line, alice.line, bob.line].join(",") };
}

export interface StackOptions {
  /** added to (or overriding) every worker's env */
  workerEnv?: NodeJS.ProcessEnv;
  apiEnv?: NodeJS.ProcessEnv;
  /** node flags for the API process (the benchmarks' `--cpu-prof`, which NODE_OPTIONS refuses) */
  apiNodeArgs?: string[];
  /** WORKER_CONCURRENCY [2] */
  concurrency?: number;
  /** the first worker's own env on top of workerEnv; false: an API alone (ingress benchmarks) [{}] */
  worker?: NodeJS.ProcessEnv | false;
  /** more workers on the same queue, each env added on top of workerEnv (fleet tests) */
  extraWorkers?: NodeJS.ProcessEnv[];
  /** a Redis other than the shared one (e.g. one a test restarts) */
  redisUrl?: string;
  /** Redis namespace of records and events; stacks sharing it share those [`<queue>:`] */
  keyPrefix?: string;
  /** queue names start with it [e2e] */
  label?: string;
  /** keep only about the last N output lines (long benchmark runs); unset: all */
  maxLogLines?: number;
  logLevel?: string;
}

export interface RunningStack {
  apiUrl: string;
  /** the admin token (sent by apiFetch and the client helpers for apiUrl) */
  token: string;
  tokens: StackTokens;
  /** host:port of the API's plaintext gRPC server */
  grpcAddress: string;
  queueName: string;
  /** Redis namespace of this stack's records and events */
  keyPrefix: string;
  /** the processes' output, whole lines, `api: …`, `worker: …`, `worker2: …` */
  logs: string[];
  /** the last `count` lines of output, for error messages */
  recentLogs(count?: number): string;
  /** every worker process started so far: [0] is the first one, then `extraWorkers`, then startWorker() */
  workers: ChildProcess[];
  /** starts one more worker on the same queue; `env` overrides e.g. WORKER_ID, DOCKER_SOCKET */
  startWorker(env?: NodeJS.ProcessEnv): ChildProcess;
  stop(): Promise<void>;
}

/**
 * Starts the built API and workers (apps/*\/dist) as separate processes on a queue of their
 * own, configured like scripts/stack.sh, with authentication on and the shared services of
 * scripts/services.sh. Used by the e2e, chaos and bench suites alike.
 */
export async function startStack(options: StackOptions = {}): Promise<RunningStack> {
  const port = await freePort();
  // the API also serves gRPC, on a fixed port by default: a free one avoids clashing with other stacks
  const grpcPort = await freePort();
  const queueName = `${options.label ?? "e2e"}-${randomUUID()}`;
  const keyPrefix = options.keyPrefix ?? `${queueName}:`;
  const secretDir = mkdtempSync(path.join(tmpdir(), "m1l0-secret-"));
  const tokenFile = path.join(secretDir, "registry-token");
  writeFileSync(tokenFile, services.registryPassword, { mode: 0o600 });
  const common: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    REDIS_URL: options.redisUrl ?? services.redisUrl,
    BUILD_QUEUE_NAME: queueName,
    REDIS_KEY_PREFIX: keyPrefix,
    ALLOW_HTTP_SOURCES: "true",
    // the local git server is on loopback, which sources may only use when allowlisted (API and workers alike)
    SOURCE_HOST_ALLOWLIST: "127.0.0.0/8,::1",
    CATALOG_ADDITIONS_FILE: path.join(ROOT_DIR, "packages/catalog/local-additions.yaml"),
    CATALOG_OVERRIDES_FILE: path.join(ROOT_DIR, "packages/catalog/local-overrides.yaml"),
    LOG_LEVEL: options.logLevel ?? "info",
  };
  const logs: string[] = [];
  // authentication on, as in production; the submission limit is out of the way unless a caller sets one
  const tokens = createStackTokens(options.label);
  const apiEnv: NodeJS.ProcessEnv = { ...common, API_TOKENS: tokens.apiTokensEnv, SUBMIT_RATE_LIMIT_MAX: "100000", HOST: "127.0.0.1", PORT: String(port), GRPC_HOST: "127.0.0.1", GRPC_PORT: String(grpcPort), ...options.apiEnv };
  const api = spawnNode(path.join(ROOT_DIR, "apps/api/dist/server.js"), apiEnv, logs, "api", options.maxLogLines, options.apiNodeArgs);
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
    const child = spawnNode(path.join(ROOT_DIR, "apps/worker/dist/main.js"), { ...workerEnv, ...env }, logs, label, options.maxLogLines);
    workers.push(child);
    return child;
  };
  if (options.worker !== false) startWorker(options.worker ?? {});
  for (const env of options.extraWorkers ?? []) startWorker(env);
  const apiUrl = `http://127.0.0.1:${port}`;
  registerApiToken(apiUrl, tokens.admin);
  const stack: RunningStack = {
    apiUrl,
    token: tokens.admin,
    tokens,
    grpcAddress: `127.0.0.1:${grpcPort}`,
    queueName,
    keyPrefix,
    logs,
    recentLogs: (count = 40) => logs.slice(-count).join("\n"),
    workers,
    startWorker,
    async stop() {
      await Promise.all([stopChild(api), ...workers.map((worker) => stopChild(worker))]);
      rmSync(secretDir, { recursive: true, force: true });
    },
  };
  // generous: on a loaded 2-core machine an API next to starting workers can take tens of seconds
  const deadline = Date.now() + 90_000;
  for (;;) {
    try {
      if ((await fetch(`${apiUrl}/readyz`)).ok) break; // health is open
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline || api.exitCode !== null) {
      await stack.stop();
      throw new Error(`the API did not start:\n${logs.join("\n")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return stack;
}
