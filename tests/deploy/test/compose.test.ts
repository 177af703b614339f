import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createApiToken } from "@m1l0/config";
import { ROOT_DIR, eventually, reportFigures } from "@m1l0/e2e";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { Compose, containerState, images, requireImages } from "../src/compose.js";
import { fetchWithin, run, step } from "../src/run.js";

// Ports of this project's services on the host: not the shared services' (6379, 5000, 4569, 8080).
const ports = { api: 28080, redis: 26379, s3: 29000, registry: 25000 };
const runId = Date.now().toString(36);
const project = `m1l0ct${runId}`;
const registry = `127.0.0.1:${ports.registry}`;
const apiUrl = `http://127.0.0.1:${ports.api}`;
const registryUser = "m1l0";
const registryPassword = `compose-registry-pw-${runId}`;
const bucket = "m1l0-builds";
const admin = createApiToken("compose-admin", "admin");
const workers = 2;
const buildNetwork = `${project}-build`;

const work = mkdtempSync(path.join(tmpdir(), "m1l0-compose-"));
const secretsDir = path.join(work, "secrets");
const dockerConfig = path.join(work, "docker-config"); // the test's own docker login, not the host's
const compose = new Compose(project, {
  M1L0_SECRETS_DIR: secretsDir,
  M1L0_API_PORT: String(ports.api),
  M1L0_REDIS_PORT: String(ports.redis),
  M1L0_S3_PORT: String(ports.s3),
  M1L0_REGISTRY_PORT: String(ports.registry),
  DOCKERHUB_REGISTRY: registry,
  DOCKERHUB_USERNAME: registryUser,
  S3_BUCKET: bucket,
  // the default egress policy on a network of this project's own: the workers install its
  // iptables rules in the host's firewall (host network namespace + NET_ADMIN), the test removes them
  BUILD_EGRESS: "public",
  BUILD_NETWORK: buildNetwork,
});
const auth = { authorization: `Bearer ${admin.token}` };
const pushed: string[] = [];

beforeAll(async () => {
  await requireImages([images.api, images.worker, images.standIns, images.python]);
  // a stack left by an aborted run of this test would hold the ports
  for (const line of (await run("docker", ["ps", "-a", "--format", "{{.Label \"com.docker.compose.project\"}}"])).split("\n")) {
    if (/^m1l0ct[0-9a-z]+$/.test(line)) await new Compose(line, compose.env).run(["down", "-v", "--remove-orphans"]).catch(() => undefined);
  }
  await run("mkdir", ["-p", secretsDir, dockerConfig]);
  const htpasswd = await run("htpasswd", ["-Bbn", registryUser, registryPassword]);
  const secrets: Record<string, string> = {
    api_tokens: `${admin.line}\n`,
    registry_htpasswd: htpasswd,
    registry_password: `${registryPassword}\n`,
    s3_access_key: "S3RVER\n", // the only identity s3rver accepts
    s3_secret_key: "S3RVER\n",
  };
  // 0644: the API runs as uid 1000 and compose 1.29 bind-mounts secret files as they are
  for (const [name, text] of Object.entries(secrets)) writeFileSync(path.join(secretsDir, name), text, { mode: 0o644 });
});

/** `iptables -S` / `ip6tables -S` lines that mention the bridge of the project's build network */
async function egressRules(bridge: string): Promise<string[]> {
  const lines = [...(await run("iptables", ["-w", "-S"])).split("\n"), ...(await run("ip6tables", ["-w", "-S"])).split("\n")];
  return lines.filter((line) => line.includes(bridge));
}

/** The workers stopped, the documented removal: `egress remove` from the worker image, then the network. */
async function removeEgress(): Promise<void> {
  await compose.run(["stop", "worker"], 120_000);
  await compose.run(["run", "--rm", "--no-deps", "worker", "node", "dist/main.js", "egress", "remove"], 120_000);
  await run("docker", ["network", "rm", buildNetwork]);
}

afterAll(async () => {
  // after a failure: the rules and the network must not outlive the test
  const networkLeft = await run("docker", ["network", "inspect", buildNetwork]).then(() => true, () => false);
  if (networkLeft) await removeEgress().catch(() => undefined);
  await compose.run(["down", "-v", "--remove-orphans"]).catch(() => undefined);
  for (const reference of pushed) await run("docker", ["rmi", "-f", reference]).catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
});

describe("docker-compose: the service's own images on one host", () => {
  it("comes up from clean, builds examples/mnist in the containerised worker, the pulled image prints its accuracy, and down -v leaves nothing", async () => {
    expect(await compose.leftovers()).toEqual([]);
    const started = Date.now();
    step(`compose up ${project}`);
    await compose.run(["up", "-d", "--no-build", "--scale", `worker=${workers}`], 300_000);
    await eventually(async () => (await fetchWithin(`${apiUrl}/readyz`).catch(() => undefined))?.ok, 90_000, 500, "the containerised API ready");
    const readyMs = Date.now() - started;

    step("API ready; waiting for healthy containers");
    // every container of the API and the workers reports healthy through its image's HEALTHCHECK
    const apiIds = await compose.containers("api");
    const workerIds = await compose.containers("worker");
    expect(apiIds).toHaveLength(1);
    expect(workerIds).toHaveLength(workers);
    await eventually(async () => {
      const states = await Promise.all([...apiIds, ...workerIds].map(containerState));
      return states.every((state) => state.Health?.Status === "healthy");
    }, 120_000, 1000, "api and workers healthy");
    expect((await run("docker", ["exec", apiIds[0]!, "id", "-u"])).trim()).toBe("1000"); // the API is not root

    step("healthy; uploading the mnist source to the stack's S3");
    // the source goes in as an s3:// archive in the compose stack's own S3
    const archive = path.join(work, "mnist.tar.gz");
    await run("tar", ["-czf", archive, "-C", path.join(ROOT_DIR, "examples/mnist"), "--exclude=./data", "."]);
    const s3 = new S3Client({ region: "us-east-1", endpoint: `http://127.0.0.1:${ports.s3}`, forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
    const key = `sources/mnist-${runId}.tar.gz`;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: readFileSync(archive) }));

    const mnist = parse(readFileSync(path.join(ROOT_DIR, "examples/mnist/m1l0.yaml"), "utf8")) as Record<string, unknown>;
    const config = { ...mnist, source: `s3://${bucket}/${key}`, revision: `compose-${runId}` };
    const response = await fetchWithin(`${apiUrl}/builds`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify(config) });
    expect(response.status).toBe(202);
    const { id } = (await response.json()) as { id: string };
    step(`submitted ${id}`);
    const record = await eventually(
      async () => {
        const view = (await (await fetchWithin(`${apiUrl}/builds/${id}`, { headers: auth })).json()) as { status: string; worker?: string; image?: { reference: string }; error?: { message: string } };
        return ["succeeded", "failed", "cancelled"].includes(view.status) ? view : undefined;
      },
      400_000,
      1000,
      `build ${id} finished`,
    );
    expect(record.status, record.error?.message).toBe("succeeded");
    const reference = record.image!.reference;
    expect(reference).toBe(`${registry}/m1l0/mnist:compose-${runId}`);
    pushed.push(reference);
    // built by one of the compose project's workers (their ids are the containers' WORKER_IDs)
    const logsOfWorkers = await compose.run(["logs", "--no-color", "worker"]);
    expect(logsOfWorkers).toContain(record.worker!);

    // it built on the project's network under the public policy, whose rules are in the host's firewall
    const buildLog = await (await fetchWithin(`${apiUrl}/builds/${id}/logs`, { headers: auth })).text();
    expect(buildLog).toContain(`egress public: network ${buildNetwork}`);
    const bridge = `br-${(await run("docker", ["network", "inspect", "-f", "{{.Id}}", buildNetwork])).trim().slice(0, 12)}`;
    expect((await egressRules(bridge)).filter((line) => line.includes("m1l0-egress")).length).toBeGreaterThan(0);

    step(`${id} succeeded on ${record.worker}; pulling ${reference}`);
    // the host's copy goes; the image comes back from the compose registry and runs
    await run("docker", ["rmi", "-f", reference]);
    const cli = { env: { ...process.env, DOCKER_CONFIG: dockerConfig } };
    await run("docker", ["login", registry, "-u", registryUser, "--password-stdin"], { ...cli, input: registryPassword });
    await run("docker", ["pull", reference], { ...cli, timeoutMs: 300_000 });
    const output = await run("docker", ["run", "--rm", "--network", "none", reference], { timeoutMs: 300_000 });
    console.log(output.trim());
    expect(output).toMatch(/^accuracy: 0\.\d{4}$/m);

    // graceful SIGTERM: both stop on their own (exit 0) well within the stop timeout
    const stopStarted = Date.now();
    await run("docker", ["stop", "-t", "30", apiIds[0]!, workerIds[0]!], { timeoutMs: 60_000 });
    const stopMs = Date.now() - stopStarted;
    for (const containerId of [apiIds[0]!, workerIds[0]!]) expect((await containerState(containerId)).ExitCode).toBe(0);
    expect(stopMs).toBeLessThan(25_000);

    step("egress remove; down -v");
    await removeEgress();
    expect(await egressRules(bridge)).toEqual([]);
    const downStarted = Date.now();
    await compose.run(["down", "-v", "--remove-orphans"], 180_000);
    const downMs = Date.now() - downStarted;
    expect(await compose.leftovers()).toEqual([]);
    reportFigures("deploy compose", `up→ready ${(readyMs / 1000).toFixed(1)} s, ${workers} workers; api+worker SIGTERM stop ${(stopMs / 1000).toFixed(1)} s; down -v ${(downMs / 1000).toFixed(1)} s`);
  });
});
