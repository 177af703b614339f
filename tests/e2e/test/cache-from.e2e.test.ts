import Docker from "dockerode";
import { Redis } from "ioredis";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { parse } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT_DIR, createGitFixture, getLog, services, startStack, submit, waitForBuild, type RunningStack } from "../src/index.js";

// A code-only change (main.py edited, requirements.txt unchanged) rebuilt on a worker whose
// daemon has never seen the project must reuse the dependency (pip) layer of the first build,
// made on another daemon: the worker pulls the repository's last pushed image and passes it to
// the classic builder as cachefrom. Needs `scripts/fleet.sh up` (daemon 2, same base images).
const SOCKET_A = "/var/run/docker.sock";
const SOCKET_B = "/var/run/docker-w2.sock";
const run = Date.now().toString(36);
const mnistDir = path.join(ROOT_DIR, "examples/mnist");
const mnist = parse(readFileSync(path.join(mnistDir, "m1l0.yaml"), "utf8")) as Record<string, unknown>;
const repository = `m1l0/e2e-cachefrom-${run}`;
// unique, so no daemon holds a cached layer for this requirements.txt from any earlier build
const requirements = `# cache-from e2e ${run}\nnumpy>=1.21\n`;
const mainPy = readFileSync(path.join(mnistDir, "main.py"), "utf8");
const cleanups: Array<() => void> = [];
const daemonA = new Docker({ socketPath: SOCKET_A });
const daemonB = new Docker({ socketPath: SOCKET_B });

function configFor(revision: string, edits: Record<string, string>) {
  const fixture = createGitFixture(mnistDir, { "requirements.txt": requirements, ...edits });
  cleanups.push(fixture.cleanup);
  return { ...mnist, repository, revision, source: fixture.url };
}

async function removeRepositoryImages(docker: Docker): Promise<void> {
  const images = await docker.listImages({ filters: JSON.stringify({ reference: [`${services.registryHost}/${repository}`] }) });
  for (const image of images) await docker.getImage(image.Id).remove({ force: true });
}

/** The image's history entry of the pip step and the layer ids (diffIDs). */
async function describeImage(docker: Docker, reference: string) {
  const history = (await docker.getImage(reference).history()) as Array<{ Created: number; CreatedBy: string }>;
  const entry = history.find((item) => item.CreatedBy.includes("pip install -r requirements.txt"));
  // Id names a local image (each daemon has its own); the entry itself is what was built
  const pip = entry ? { created: entry.Created, createdBy: entry.CreatedBy } : undefined;
  const inspect = await docker.getImage(reference).inspect();
  return { pip, layers: inspect.RootFS.Layers ?? [] };
}

describe("dependency layer shared through the registry (cache-from across daemons)", () => {
  let stack: RunningStack;

  beforeAll(async () => {
    if (!existsSync(SOCKET_B)) throw new Error(`daemon ${SOCKET_B} missing: run \`bash scripts/fleet.sh up 3\` (scripts/test.sh does)`);
    const base = "m1l0-local/python:3.11-bookworm";
    const [baseA, baseB] = await Promise.all([daemonA.getImage(base).inspect(), daemonB.getImage(base).inspect()]);
    if (baseA.Id !== baseB.Id) throw new Error(`${base} differs between the daemons: run \`bash scripts/fleet.sh up 3\` to copy the default daemon's`);
    stack = await startStack({ concurrency: 1, workerEnv: { WORKER_ID: `cachefrom-a-${run}`, DOCKER_SOCKET: SOCKET_A } });
  });
  afterAll(async () => {
    await stack?.stop();
    for (const cleanup of cleanups) cleanup();
    await Promise.all([removeRepositoryImages(daemonA), removeRepositoryImages(daemonB)]).catch(() => undefined);
  });

  it("a code-only change built on daemon B reuses the pip layer daemon A built, pulled from the registry", async () => {
    const first = await waitForBuild(stack.apiUrl, await submit(stack.apiUrl, configFor(`${run}-v1`, {})));
    expect(first.status, JSON.stringify(first)).toBe("succeeded");
    expect(first.worker).toBe(`cachefrom-a-${run}`);
    const firstLog = await getLog(stack.apiUrl, first.id);
    expect(firstLog).toMatch(/\[build\] Step \d+\/\d+ : RUN python3 -m pip install -r requirements.txt\n.*\[build\]\s+---> Running in/);

    // the next build can only run on worker B, whose daemon holds nothing of this repository
    const workerA = stack.workers[0]!;
    await new Promise<void>((resolve) => {
      workerA.once("exit", () => resolve());
      workerA.kill("SIGTERM");
    });
    await removeRepositoryImages(daemonB);
    stack.startWorker({ WORKER_ID: `cachefrom-b-${run}`, DOCKER_SOCKET: SOCKET_B });

    const second = await waitForBuild(stack.apiUrl, await submit(stack.apiUrl, configFor(`${run}-v2`, { "main.py": `${mainPy}\n# code-only change ${run}\n` })));
    expect(second.status, JSON.stringify(second)).toBe("succeeded");
    expect(second.worker).toBe(`cachefrom-b-${run}`);
    const log = await getLog(stack.apiUrl, second.id);
    expect(log).toContain(`pulled ${first.image!.reference} for its layers`);
    expect(log).toContain(`cache from ${first.image!.reference}`);
    // the classic builder says so for the pip step, and runs only the code step and later ones
    expect(log).toMatch(/\[build\] Step \d+\/\d+ : RUN python3 -m pip install -r requirements.txt\n.*\[build\]\s+---> Using cache/);
    const codeStep = log.slice(log.indexOf(": COPY . ./"));
    expect(codeStep.slice(0, codeStep.indexOf("Step ", 5))).not.toContain("Using cache");

    const built = await describeImage(daemonA, first.image!.reference);
    const rebuilt = await describeImage(daemonB, second.image!.reference);
    expect(rebuilt.pip).toBeDefined();
    // same history entry (its creation time is daemon A's) and the same layers up to and including pip's
    expect(rebuilt.pip).toEqual(built.pip);
    const shared = built.layers.length - 1; // all but the code layer (COPY . ./)
    expect(rebuilt.layers.slice(0, shared)).toEqual(built.layers.slice(0, shared));
    expect(rebuilt.layers.at(-1)).not.toBe(built.layers.at(-1));

    // B's image stands on steps its builder restored from the pull, which its local build cache
    // cannot match: the next code-only change on B passes it as cachefrom and still reuses pip
    const third = await waitForBuild(stack.apiUrl, await submit(stack.apiUrl, configFor(`${run}-v2b`, { "main.py": `${mainPy}\n# code-only change again ${run}\n` })));
    expect(third.status, JSON.stringify(third)).toBe("succeeded");
    const thirdLog = await getLog(stack.apiUrl, third.id);
    expect(thirdLog).toContain(`cache from ${second.image!.reference}`);
    expect(thirdLog).toMatch(/\[build\] Step \d+\/\d+ : RUN python3 -m pip install -r requirements.txt\n.*\[build\]\s+---> Using cache/);
    expect((await describeImage(daemonB, third.image!.reference)).pip).toEqual(built.pip);
  }, 300_000);

  it("an unavailable cache image is logged and ignored; an image the daemon built itself is left to its local cache", async () => {
    const redis = new Redis(services.redisUrl, { lazyConnect: true });
    await redis.connect();
    const missing = `${services.registryHost}/${repository}:never-pushed`;
    try {
      await redis.set(`${stack.keyPrefix}last-image:${services.registryHost}/${repository}`, missing);
    } finally {
      redis.disconnect();
    }
    const record = await waitForBuild(stack.apiUrl, await submit(stack.apiUrl, configFor(`${run}-v3`, { "main.py": `${mainPy}\n# another change ${run}\n` })));
    expect(record.status, JSON.stringify(record)).toBe("succeeded");
    const log = await getLog(stack.apiUrl, record.id);
    expect(log).toContain(`no registry cache: ${missing} is unavailable`);
    expect(log).not.toContain(`cache from ${missing}`);

    // that build, made on daemon B, is now the last image: B's own build cache serves the next one
    const next = await waitForBuild(stack.apiUrl, await submit(stack.apiUrl, configFor(`${run}-v4`, { "main.py": `${mainPy}\n# a third change ${run}\n` })));
    expect(next.status, JSON.stringify(next)).toBe("succeeded");
    const nextLog = await getLog(stack.apiUrl, next.id);
    expect(nextLog).toContain(`local build cache (the last image ${record.image!.reference} was built here)`);
    expect(nextLog).not.toContain("cache from");
    expect(nextLog).toMatch(/\[build\] Step \d+\/\d+ : RUN python3 -m pip install -r requirements.txt\n.*\[build\]\s+---> Using cache/);
  }, 300_000);
});
