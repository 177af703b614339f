import { createApiToken } from "@m1l0/config";
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { registerApiToken } from "./util.js";

export const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** Addresses of the real services started by scripts/services.sh (same defaults as scripts/lib.sh). */
export interface Services {
  redisUrl: string;
  registryHost: string;
  registryUsername: string;
  registryPassword: string;
  gitServerUrl: string;
  gitFixturesDir: string;
  s3Endpoint: string;
  s3Bucket: string;
  cacheDir: string;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no free port"))));
    });
  });
}

export interface RunningStack {
  apiUrl: string;
  /** admin bearer token of this stack's API (apiFetch sends it) */
  apiToken: string;
  queueName: string;
  /** last lines of the processes' output, for error messages */
  recentLogs(): string;
  stop(): Promise<void>;
}

const MAX_KEPT_LOG_LINES = 200;

function spawnNode(script: string, env: NodeJS.ProcessEnv, logs: string[], label: string): ChildProcess {
  const child = spawn(process.execPath, [script], { env, stdio: ["ignore", "pipe", "pipe"] });
  const collect = (chunk: Buffer) => {
    logs.push(...chunk.toString().split("\n").filter(Boolean).map((line) => `${label}: ${line}`));
    // Ingress runs log tens of thousands of requests; only the tail matters for diagnostics.
    if (logs.length > MAX_KEPT_LOG_LINES * 2) logs.splice(0, logs.length - MAX_KEPT_LOG_LINES);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  return child;
}

function stopChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    child.kill("SIGTERM");
    setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
  });
}

/**
 * Starts the built API (apps/api/dist) and optionally a worker (apps/worker/dist) as separate
 * processes on a queue of their own, configured like scripts/stack.sh (and tests/e2e's stack).
 */
export async function startStack(
  services: Services,
  options: {
    worker: boolean;
    workerConcurrency?: number;
    logLevel?: string;
    /** one worker per entry (its env on top of the defaults, e.g. DOCKER_SOCKET, WORKER_ID); default one worker */
    workers?: NodeJS.ProcessEnv[];
    /** Redis namespace of records (and the workers' last-image keys); stacks sharing it share those */
    keyPrefix?: string;
  },
): Promise<RunningStack> {
  const port = await freePort();
  // The API also serves gRPC, on a fixed port by default; a free one avoids clashing with other stacks on this machine.
  const grpcPort = await freePort();
  const queueName = `bench-${randomUUID()}`;
  const secretDir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-secret-"));
  const tokenFile = path.join(secretDir, "registry-token");
  writeFileSync(tokenFile, services.registryPassword, { mode: 0o600 });
  const common: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    REDIS_URL: services.redisUrl,
    BUILD_QUEUE_NAME: queueName,
    ALLOW_HTTP_SOURCES: "true",
    // the local git server is on loopback, which the API and the workers refuse unless allowlisted
    SOURCE_HOST_ALLOWLIST: "127.0.0.0/8,::1",
    CATALOG_OVERRIDES_FILE: path.join(ROOT_DIR, "packages/catalog/local-overrides.yaml"),
    LOG_LEVEL: options.logLevel ?? "info",
    ...(options.keyPrefix ? { REDIS_KEY_PREFIX: options.keyPrefix } : {}),
  };
  const logs: string[] = [];
  const children: ChildProcess[] = [];
  // Auth on, as in production: every request pays the token check, every submission the rate-limit counter (a limit no benchmark reaches)
  const apiToken = createApiToken("bench", "admin");
  children.push(spawnNode(path.join(ROOT_DIR, "apps/api/dist/server.js"), { ...common, API_TOKENS: apiToken.line, SUBMIT_RATE_LIMIT_MAX: "100000000", HOST: "127.0.0.1", PORT: String(port), GRPC_HOST: "127.0.0.1", GRPC_PORT: String(grpcPort) }, logs, "api"));
  for (const [index, workerEnv] of (options.worker ? (options.workers ?? [{}]) : []).entries()) {
    children.push(
      spawnNode(
        path.join(ROOT_DIR, "apps/worker/dist/main.js"),
        {
          ...common,
          WORKER_CONCURRENCY: String(options.workerConcurrency ?? 1),
          DOCKERHUB_REGISTRY: services.registryHost,
          DOCKERHUB_USERNAME: services.registryUsername,
          DOCKERHUB_TOKEN_FILE: tokenFile,
          S3_ENDPOINT: services.s3Endpoint,
          S3_FORCE_PATH_STYLE: "true",
          AWS_ACCESS_KEY_ID: "S3RVER",
          AWS_SECRET_ACCESS_KEY: "S3RVER",
          AWS_REGION: "us-east-1",
          BUILD_NETWORK: "none",
          ...workerEnv,
        },
        logs,
        index === 0 ? "worker" : `worker${index + 1}`,
      ),
    );
  }
  registerApiToken(`http://127.0.0.1:${port}`, apiToken.token);
  const stack: RunningStack = {
    apiUrl: `http://127.0.0.1:${port}`,
    apiToken: apiToken.token,
    queueName,
    recentLogs: () => logs.slice(-40).join("\n"),
    async stop() {
      await Promise.all(children.map(stopChild));
      rmSync(secretDir, { recursive: true, force: true });
    },
  };
  // generous: on a loaded 2-core machine an API next to 3 starting workers can take tens of seconds
  const deadline = Date.now() + 90_000;
  for (;;) {
    try {
      if ((await fetch(`${stack.apiUrl}/readyz`)).ok) break; // health is open
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline || children.some((child) => child.exitCode !== null)) {
      await stack.stop();
      throw new Error(`the API did not start:\n${stack.recentLogs()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return stack;
}
