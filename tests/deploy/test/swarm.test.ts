import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { createApiToken } from "@m1l0/config";
import { ROOT_DIR, eventually, reportFigures } from "@m1l0/e2e";
import { findNeedles, scanRedis, scanS3, type Finding } from "@m1l0/testkit";
import { Redis } from "ioredis";
import { connect } from "node:net";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { images, requireImages } from "../src/compose.js";
import { fetchWithin, run, step } from "../src/run.js";
import { SwarmNode, swarmScript } from "../src/swarm.js";

// A real swarm on this machine: three node containers (one manager, two workers), each with
// its own nested dockerd; a fourth joins later. The host's own daemon never joins a swarm.
const runId = Date.now().toString(36);
const STACK = "m1l0";
const bucket = "m1l0-builds";
const registryUser = "m1l0";
const registryPassword = `swarm-registry-pw-${runId}`;
const redisPassword = `swarm-redis-pw-${runId}`;
const admin = createApiToken("swarm-admin", "admin");
const auth = { authorization: `Bearer ${admin.token}` };
const nodes: SwarmNode[] = [];
const manager = () => nodes[0]!;
const registry = () => `${manager().ip}:5000`;
const work = mkdtempSync(path.join(tmpdir(), "m1l0-swarm-"));
const submitted: string[] = [];
const figures: string[] = [];

interface BuildView {
  id: string;
  status: string;
  worker?: string;
  image?: { reference: string };
  error?: { message: string };
}

/** The API through whichever node runs a replica now (host-mode ports: no routing mesh). */
async function api(pathname: string, init: RequestInit = {}): Promise<Response> {
  let last: unknown;
  for (const node of nodes) {
    try {
      return await fetchWithin(`http://${node.ip}:8080${pathname}`, { ...init, headers: { ...auth, ...(init.headers as Record<string, string> | undefined) } }, 15_000);
    } catch (error) {
      last = error; // no replica on this node (connection refused)
    }
  }
  throw new Error(`no API replica answered ${pathname}`, { cause: last });
}

async function submit(repository: string, dockerfile: string): Promise<string> {
  const config = {
    service: "dockerhub",
    repository,
    revision: "v1",
    source: `s3://${bucket}/sources/swarm-${runId}.tar.gz`,
    dockerfile,
    entry: "main.py",
    framework: "python",
    pyversion: "3.11",
  };
  const response = await api("/builds", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(config) });
  const body = (await response.json()) as { id?: string };
  if (response.status !== 202 || !body.id) throw new Error(`submit ${repository}: ${response.status} ${JSON.stringify(body)}`);
  submitted.push(body.id);
  return body.id;
}

async function getRecord(id: string): Promise<BuildView | undefined> {
  const response = await api(`/builds/${id}`).catch(() => undefined);
  return response?.ok ? ((await response.json()) as BuildView) : undefined;
}

async function waitFinished(ids: readonly string[], timeoutMs: number): Promise<BuildView[]> {
  const finished = new Map<string, BuildView>();
  await eventually(
    async () => {
      for (const id of ids) {
        if (finished.has(id)) continue;
        const record = await getRecord(id);
        if (record && ["succeeded", "failed", "cancelled", "cached"].includes(record.status)) finished.set(id, record);
      }
      return finished.size === ids.length;
    },
    timeoutMs,
    1000,
    `${ids.length} builds finished`,
  );
  return ids.map((id) => finished.get(id)!);
}

async function terminalStatuses(id: string): Promise<string[]> {
  const log = await (await api(`/builds/${id}/logs`)).text();
  return [...log.matchAll(/\[status\] (\w+)/g)].map((match) => match[1]!).filter((status) => ["succeeded", "failed", "cancelled", "cached"].includes(status));
}

/** Tasks of a stack service as the manager sees them: node and current state. */
async function tasks(service: string): Promise<Array<{ node: string; state: string; desired: string }>> {
  const out = await manager().docker(["service", "ps", `${STACK}_${service}`, "--format", "{{.Node}}\t{{.CurrentState}}\t{{.DesiredState}}"]);
  return out
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [node = "", state = "", desired = ""] = line.split("\t");
      return { node, state, desired };
    });
}

const runningOn = async (service: string) => (await tasks(service)).filter((task) => task.desired === "Running" && task.state.startsWith("Running")).map((task) => task.node);

async function joinAsWorker(node: SwarmNode): Promise<void> {
  const token = (await manager().docker(["swarm", "join-token", "-q", "worker"])).trim();
  await node.docker(["swarm", "join", "--token", token, `${manager().ip}:2377`]);
}

beforeAll(async () => {
  await requireImages([images.api, images.worker, images.standIns, images.busybox]);
  await swarmScript(["down"]); // nodes an aborted run left behind
  step("starting nodes 1-3");
  for (const index of [1, 2, 3]) nodes.push(await SwarmNode.start(index));
  for (const node of nodes) await node.load([images.api, images.worker, images.busybox, ...(node === manager() ? [images.standIns] : [])]);

  step("images loaded; forming the swarm");
  await manager().docker(["swarm", "init", "--advertise-addr", manager().ip, "--default-addr-pool", "10.214.0.0/16"]);
  for (const node of nodes.slice(1)) await joinAsWorker(node);
  for (const node of nodes) await manager().docker(["node", "update", "--label-add", "m1l0.builder=true", node.name]);

  const htpasswd = await run("htpasswd", ["-Bbn", registryUser, registryPassword]);
  const secrets: Record<string, string> = {
    redis_conf: `appendonly yes\nmaxmemory-policy noeviction\ndir /data\nprotected-mode no\nrequirepass ${redisPassword}\n`,
    redis_url: `redis://:${redisPassword}@redis:6379\n`,
    api_tokens: `${admin.line}\n`,
    registry_htpasswd: htpasswd,
    registry_password: `${registryPassword}\n`,
    s3_access_key: "S3RVER\n", // the only identity s3rver accepts
    s3_secret_key: "S3RVER\n",
  };
  for (const [name, text] of Object.entries(secrets)) await manager().writeFile(`/root/m1l0/secrets/${name}`, text);
  for (const file of ["stack.yml", "stack.local.yml"]) await manager().writeFile(`/root/m1l0/${file}`, readFileSync(path.join(ROOT_DIR, "deploy", file), "utf8"));

  step("deploying the stack");
  await manager().docker(["stack", "deploy", "--resolve-image", "never", "-c", "/root/m1l0/stack.yml", "-c", "/root/m1l0/stack.local.yml", STACK], {
    env: {
      M1L0_SECRETS_DIR: "/root/m1l0/secrets",
      M1L0_SECRETS_VERSION: runId,
      M1L0_REGISTRY_ADDRESS: registry(),
      M1L0_INSECURE_REGISTRIES: registry(),
      M1L0_API_IMAGE: images.api,
      M1L0_WORKER_IMAGE: images.worker,
      M1L0_STANDIN_IMAGE: images.standIns,
      BUILD_EGRESS: "none", // test builds need no network (and the rules would need a privileged step per node)
      WORKER_SHUTDOWN_GRACE_SECONDS: "3",
      SUBMIT_RATE_LIMIT_MAX: "0", // one token submits every build of this test
    },
  });
  const converged = async () => {
    for (const service of ["redis", "s3", "registry"]) if ((await runningOn(service)).length !== 1) return false;
    return (await runningOn("worker")).length === 3 && (await runningOn("api")).length === 2 && (await api("/readyz").catch(() => undefined))?.ok;
  };
  await eventually(converged, 180_000, 2000, "stack converged (redis, s3, registry; 3 workers, 2 API replicas, API ready)");

  step("stack converged");
  // one source archive for every build: two custom Dockerfiles on the loaded busybox base
  const source = path.join(work, "source");
  await run("mkdir", ["-p", source]);
  writeFileSync(path.join(source, "main.py"), "print('hello from the swarm')\n");
  writeFileSync(path.join(source, "Dockerfile.fast"), `FROM ${images.busybox}\nCOPY main.py /srv/main.py\nRUN sleep 2\n`);
  writeFileSync(path.join(source, "Dockerfile.slow"), `FROM ${images.busybox}\nCOPY main.py /srv/main.py\nRUN sleep 25\n`);
  const archive = path.join(work, "source.tar.gz");
  await run("tar", ["-czf", archive, "-C", source, "."]);
  const s3 = new S3Client({ region: "us-east-1", endpoint: `http://${manager().ip}:9000`, forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
  // a task is "running" once its process started; s3rver listens a moment later
  await eventually(() => s3.send(new PutObjectCommand({ Bucket: bucket, Key: `sources/swarm-${runId}.tar.gz`, Body: readFileSync(archive) })).catch(() => undefined), 60_000, 1000, "source uploaded to the stack's S3");
}, 900_000);

afterAll(async () => {
  // M1L0_SWARM_KEEP=1 leaves the nodes up to look at after a failure (scripts/swarm.sh down removes them)
  if (process.env.M1L0_SWARM_KEEP !== "1") await swarmScript(["down"]).catch((error: Error) => console.error(error.message));
  rmSync(work, { recursive: true, force: true });
  if (figures.length) reportFigures("deploy swarm", figures.join("; "));
});

describe("Docker Swarm: deploy/stack.yml on a multi-node swarm of node containers", () => {
  it("secrets reach the tasks as files; Redis refuses a client without the password", async () => {
    const node = nodes[1]!;
    const [worker] = await node.serviceContainers(`${STACK}_worker`);
    expect(worker).toBeDefined();
    expect((await node.docker(["exec", worker!, "cat", "/run/secrets/registry_password"])).trim()).toBe(registryPassword);
    expect((await node.docker(["exec", worker!, "cat", "/run/secrets/redis_url"])).trim()).toBe(`redis://:${redisPassword}@redis:6379`);
    // the swarm holds them under versioned names
    expect((await manager().docker(["secret", "ls", "--format", "{{.Name}}"])).split("\n")).toContain(`m1l0_registry_password_${runId}`);
    // a plain RESP PING without AUTH (no client library that retries or negotiates first)
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(6379, manager().ip, () => socket.write("PING\r\n"));
      socket.setTimeout(10_000, () => socket.destroy(new Error("redis did not answer within 10 s")));
      socket.once("data", (data) => {
        resolve(data.toString());
        socket.destroy();
      });
      socket.once("error", reject);
    });
    expect(answer).toMatch(/^-NOAUTH/);
  });

  it("30 builds spread over the three nodes; each node's daemon holds its own builds and no other's", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 30; i++) ids.push(await submit(`swarm-${runId}/b${i}`, "Dockerfile.fast"));
    step("30 builds submitted");
    const records = await waitFinished(ids, 420_000);
    for (const record of records) expect(record.status, `${record.id}: ${record.error?.message}`).toBe("succeeded");
    const perNode = new Map<string, string[]>();
    for (const record of records) perNode.set(record.worker!, [...(perNode.get(record.worker!) ?? []), record.image!.reference]);
    expect([...perNode.keys()].sort()).toEqual(nodes.map((node) => node.name).sort());
    for (const node of nodes) {
      const held = new Set(await node.images());
      for (const reference of perNode.get(node.name)!) expect(held.has(reference), `${reference} on ${node.name}`).toBe(true);
      for (const [other, references] of perNode) if (other !== node.name) for (const reference of references) expect(held.has(reference), `${reference} (built on ${other}) on ${node.name}`).toBe(false);
    }
    figures.push(`builds per node: ${nodes.map((node) => `${node.name} ${perNode.get(node.name)!.length}`).join(", ")}`);
  });

  it("a node drained mid-build: its builds finish on other nodes, each with one final status", async () => {
    const victim = nodes[1]!;
    // six slow builds fill the three workers' six slots, so the victim runs some of them
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await submit(`swarm-${runId}/slow${i}`, "Dockerfile.slow"));
    const onVictim = await eventually(
      async () => {
        const records = await Promise.all(ids.map(getRecord));
        const running = records.filter((record): record is BuildView => record?.status === "building" && record.worker === victim.name);
        return running.length > 0 ? running.map((record) => record.id) : undefined;
      },
      120_000,
      500,
      `a slow build building on ${victim.name}`,
    );
    step(`draining ${victim.name} while it builds ${onVictim.join(", ")}`);
    const drained = Date.now();
    await manager().docker(["node", "update", "--availability", "drain", victim.name]);
    const moved = await waitFinished(onVictim, 300_000);
    const recoveryMs = Date.now() - drained;
    for (const record of moved) {
      expect(record.status, `${record.id}: ${record.error?.message}`).toBe("succeeded");
      expect(record.worker).not.toBe(victim.name);
      expect(await terminalStatuses(record.id)).toEqual(["succeeded"]);
      // it did start on the drained node: its worker handed it back on SIGTERM
      expect(await (await api(`/builds/${record.id}/logs`)).text()).toContain("build requeued for another worker");
    }
    // nothing lost: every slow build, moved or not, ends once, as succeeded
    for (const record of await waitFinished(ids, 300_000)) {
      expect(record.status, `${record.id}: ${record.error?.message}`).toBe("succeeded");
      expect(await terminalStatuses(record.id)).toEqual(["succeeded"]);
    }
    expect(await runningOn("worker")).not.toContain(victim.name);
    figures.push(`drain: ${moved.length} build(s) on ${victim.name} finished elsewhere ${(recoveryMs / 1000).toFixed(1)} s after the drain`);
  });

  it("a fourth node joins: a worker appears there and takes builds", async () => {
    const newcomer = await SwarmNode.start(4);
    nodes.push(newcomer);
    await newcomer.load([images.api, images.worker, images.busybox]);
    step(`joining ${newcomer.name}`);
    const joined = Date.now();
    await joinAsWorker(newcomer);
    await manager().docker(["node", "update", "--label-add", "m1l0.builder=true", newcomer.name]);
    await eventually(async () => (await runningOn("worker")).includes(newcomer.name), 120_000, 1000, `a worker running on ${newcomer.name}`);
    const workerUpMs = Date.now() - joined;
    let first: BuildView | undefined;
    for (let batch = 0; !first; batch++) {
      if (Date.now() - joined > 240_000) throw new Error(`no build ran on ${newcomer.name} within 240 s of its join`);
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) ids.push(await submit(`swarm-${runId}/join${batch}-${i}`, "Dockerfile.fast"));
      const records = await waitFinished(ids, 240_000);
      for (const record of records) expect(record.status, `${record.id}: ${record.error?.message}`).toBe("succeeded");
      first = records.find((record) => record.worker === newcomer.name);
    }
    const firstBuildMs = Date.now() - joined;
    expect(await newcomer.images()).toContain(first.image!.reference);
    figures.push(`join: worker running ${(workerUpMs / 1000).toFixed(1)} s and first build done ${(firstBuildMs / 1000).toFixed(1)} s after the join`);
  });

  it("no secret appears in any service's log, in Redis or in S3", async () => {
    const secrets = [registryPassword, redisPassword, admin.token, "S3RVER"];
    const findings: Finding[] = [];
    let logText = "";
    for (const service of ["api", "worker", "redis", "s3", "registry"]) {
      const logs = await manager().docker(["service", "logs", "--raw", `${STACK}_${service}`], { timeoutMs: 120_000 });
      logText += logs;
      findNeedles(`service logs ${service}`, logs, secrets, findings);
    }
    for (const id of submitted) findNeedles(`build log ${id}`, await (await api(`/builds/${id}/logs`)).text(), secrets, findings);
    const redis = new Redis({ host: manager().ip, port: 6379, password: redisPassword, maxRetriesPerRequest: 3 });
    const s3 = new S3Client({ region: "us-east-1", endpoint: `http://${manager().ip}:9000`, forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
    try {
      findings.push(...(await scanRedis(redis, secrets)), ...(await scanS3(s3, bucket, secrets)));
    } finally {
      redis.disconnect();
    }
    expect(findings).toEqual([]);
    expect(logText).toContain("build succeeded"); // the scan read real logs
  });

  it("docker stack rm leaves no service, task, network or secret on any node", async () => {
    step("stack rm");
    await manager().docker(["stack", "rm", STACK]);
    const leftovers = async () => {
      const found: string[] = [];
      found.push(...(await manager().docker(["service", "ls", "-q"])).split("\n").filter(Boolean).map((id) => `service ${id}`));
      found.push(...(await manager().docker(["secret", "ls", "-q"])).split("\n").filter(Boolean).map((id) => `secret ${id}`));
      for (const node of nodes) {
        const label = `label=com.docker.stack.namespace=${STACK}`;
        found.push(...(await node.docker(["ps", "-aq", "--filter", label])).split("\n").filter(Boolean).map((id) => `container ${id} on ${node.name}`));
        found.push(...(await node.docker(["network", "ls", "-q", "--filter", label])).split("\n").filter(Boolean).map((id) => `network ${id} on ${node.name}`));
      }
      return found;
    };
    await eventually(async () => (await leftovers()).length === 0, 120_000, 2000, "stack removed from every node").catch(async (error: Error) => {
      throw new Error(`${error.message}: ${(await leftovers()).join(", ")}`);
    });
    // named volumes outlive `stack rm` by design (they are the data); they are on the manager only
    const volumes = (await manager().docker(["volume", "ls", "-q", "--filter", `label=com.docker.stack.namespace=${STACK}`])).split("\n").filter(Boolean).sort();
    expect(volumes).toEqual([`${STACK}_redis-data`, `${STACK}_registry-data`, `${STACK}_s3-data`]);
    await manager().docker(["volume", "rm", ...volumes]);
    await swarmScript(["down"]);
    expect((await run("docker", ["ps", "-aq", "--filter", "label=ai.m1l0.swarm-node"])).trim()).toBe("");
    expect((await run("docker", ["volume", "ls", "-q"])).split("\n").filter((name) => name.startsWith("m1l0-swarm-"))).toEqual([]);
  });
});
