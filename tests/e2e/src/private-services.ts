import { execFileSync, execSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { withDeadline } from "@m1l0/config";
import { ROOT_DIR, freePort, services, stopChild as stopProcess, waitFor } from "@m1l0/testkit";

/**
 * Private instances of the services for tests that stop or restart one: each has its own
 * port, socket and directories, so the shared services (other helpers' tests) are never touched.
 */
export interface PrivateService {
  /** redis://…, host:port or unix socket path */
  address: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** stops it and removes its directories */
  destroy(): Promise<void>;
}

/** Private services stop when asked, without SIGKILL: a test that restarts one wants its clean shutdown (AOF, registry storage). */
const stopChild = (child: ChildProcess | undefined, signal: NodeJS.Signals = "SIGTERM") => stopProcess(child, { signal, killAfterMs: 0 });

/** A service the test runs as a child process: restartable on the same port and data; destroy removes `dir`. */
async function startChildService(options: { address: string; what: string; command: string; args: string[]; dir: string; readyMs: number; ready: () => boolean | Promise<boolean> }): Promise<PrivateService> {
  let child: ChildProcess | undefined;
  const service: PrivateService = {
    address: options.address,
    async start() {
      child = spawn(options.command, options.args, { stdio: "ignore" });
      await waitFor(options.what, options.readyMs, options.ready);
    },
    stop: () => stopChild(child),
    async destroy() {
      await stopChild(child);
      rmSync(options.dir, { recursive: true, force: true });
    },
  };
  await service.start();
  return service;
}

/** A redis-server of the test's own (AOF on, noeviction), restartable on the same port and data. */
export async function startPrivateRedis(): Promise<PrivateService> {
  const port = await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), "m1l0-redis-"));
  const ping = () => {
    try {
      return execFileSync("redis-cli", ["-p", String(port), "ping"], { stdio: ["ignore", "pipe", "ignore"] }).toString().includes("PONG");
    } catch {
      return false;
    }
  };
  return startChildService({
    address: `redis://127.0.0.1:${port}`,
    what: "own redis-server",
    command: "redis-server",
    args: ["--port", String(port), "--bind", "127.0.0.1", "--appendonly", "yes", "--maxmemory-policy", "noeviction", "--dir", dataDir, "--save", ""],
    dir: dataDir,
    readyMs: 10_000,
    ready: ping,
  });
}

/** A docker-registry (distribution) of the test's own with the shared registry's credentials. */
export async function startPrivateRegistry(): Promise<PrivateService> {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), "m1l0-registry-"));
  const htpasswd = execFileSync("htpasswd", ["-Bbn", services.registryUsername, services.registryPassword]).toString();
  writeFileSync(path.join(dir, "htpasswd"), htpasswd);
  writeFileSync(
    path.join(dir, "config.yml"),
    [
      "version: 0.1",
      "log: { level: warn }",
      `storage: { filesystem: { rootdirectory: ${dir}/data }, delete: { enabled: true } }`,
      `http: { addr: 127.0.0.1:${port} }`,
      `auth: { htpasswd: { realm: m1l0-registry, path: ${dir}/htpasswd } }`,
      "",
    ].join("\n"),
  );
  const up = async () => {
    try {
      return (await fetch(`http://127.0.0.1:${port}/v2/`)).status === 401;
    } catch {
      return false;
    }
  };
  return startChildService({ address: `127.0.0.1:${port}`, what: "own registry", command: "docker-registry", args: ["serve", path.join(dir, "config.yml")], dir, readyMs: 20_000, ready: up });
}

/**
 * A dockerd of the test's own, the way scripts/fleet.sh starts daemons 2 and 3: its own
 * socket, data root, exec root, pidfile and bridge (never the default docker0). The local
 * busybox base image is copied in from the shared daemon.
 */
export async function startPrivateDockerd(images: string[] = [services.baseImageBusybox]): Promise<PrivateService & { pid(): number | undefined }> {
  const id = randomBytes(3).toString("hex");
  const bridge = `m1l0c${id}`;
  const dataRoot = `/var/lib/m1l0-chaos-${id}`;
  const execRoot = `/var/run/m1l0c-${id}`;
  const socket = `/var/run/m1l0c-${id}.sock`;
  const pidfile = `/var/run/m1l0c-${id}.pid`;
  // a /24 in 172.31.200-249 that no other bridge uses
  const used = execSync("ip -4 -o addr show").toString();
  let subnet = "";
  for (let third = 200; third < 250 && !subnet; third++) if (!used.includes(`172.31.${third}.`)) subnet = `172.31.${third}`;
  if (!subnet) throw new Error("no free 172.31.2xx.0/24 for a private bridge");
  execFileSync("ip", ["link", "add", bridge, "type", "bridge"]);
  execFileSync("ip", ["addr", "add", `${subnet}.1/24`, "dev", bridge]);
  execFileSync("ip", ["link", "set", bridge, "up"]);
  mkdirSync(dataRoot, { recursive: true });
  let child: ChildProcess | undefined;
  const up = () => {
    try {
      execFileSync("docker", ["-H", `unix://${socket}`, "info"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  };
  const service = {
    address: socket,
    pid: () => (existsSync(pidfile) ? Number(readFileSync(pidfile, "utf8").trim()) : undefined),
    async start() {
      child = spawn(
        "dockerd",
        ["--data-root", dataRoot, "--exec-root", execRoot, "-H", `unix://${socket}`, "--pidfile", pidfile, "--bridge", bridge, "--iptables=false", "--ip-masq=false", "--shutdown-timeout", "2"],
        { stdio: "ignore", detached: true },
      );
      await waitFor("own dockerd", 60_000, up);
    },
    stop: () => stopChild(child),
    async destroy() {
      await stopChild(child);
      rmSync(dataRoot, { recursive: true, force: true });
      rmSync(execRoot, { recursive: true, force: true });
      rmSync(socket, { force: true });
      try {
        execFileSync("ip", ["link", "del", bridge]);
      } catch {
        // already gone
      }
    },
  };
  await service.start();
  for (const image of images) execSync(`docker -H unix:///var/run/docker.sock save ${image} | docker -H unix://${socket} load -q`, { stdio: "ignore" });
  return service;
}


/**
 * A free port below the ephemeral range: while a private service is stopped, clients keep
 * connecting to its port, and an ephemeral-range port could be taken by one of those sockets.
 */
async function freeLowPort(): Promise<number> {
  const { createServer } = await import("node:net");
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 10_000);
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer().once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) return port;
  }
}

/** An s3rver of the test's own with `bucket`, restartable on the same port and data (an S3 outage). */
export async function startPrivateS3(bucket = services.s3Bucket): Promise<PrivateService & { endpoint: string; bucket: string; env: NodeJS.ProcessEnv }> {
  const port = await freeLowPort();
  const dir = mkdtempSync(path.join(tmpdir(), "m1l0-s3rver-"));
  const endpoint = `http://127.0.0.1:${port}`;
  const answers = async () => {
    try {
      // a HEAD of a missing key: listing can answer 500 after a stop that cut an upload short
      const response = await withDeadline({ timeoutMs: 2_000 }, (signal) => fetch(`${endpoint}/${bucket}/probe-${randomBytes(6).toString("hex")}`, { method: "HEAD", signal }));
      return response.status === 404;
    } catch {
      return false;
    }
  };
  const service = await startChildService({
    address: `127.0.0.1:${port}`,
    what: "own s3rver",
    command: path.join(ROOT_DIR, "node_modules/.bin/s3rver"),
    args: ["-d", dir, "-a", "127.0.0.1", "-p", String(port), "--silent", "--configure-bucket", bucket],
    dir,
    readyMs: 30_000,
    ready: answers,
  });
  /** env: what a worker or API needs to use it */
  return { ...service, endpoint, bucket, env: { S3_ENDPOINT: endpoint, S3_BUCKET: bucket, S3_FORCE_PATH_STYLE: "true", AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_REGION: "us-east-1" } };
}
