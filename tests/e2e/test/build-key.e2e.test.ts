import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT_DIR, createGitFixture, getLog, services, startStack, waitForBuild, type RunningStack } from "../src/index.js";

// One build per identity: the build key, skip-if-unchanged (`cached`), and identical requests
// attaching to the build in flight — against the real registry, git server and daemon.
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const run = Date.now().toString(36);
const cleanups: Array<() => void> = [];
let stack: RunningStack;

interface SubmitAnswer {
  status: number;
  body: { id?: string; status?: string; attached?: boolean; error?: unknown };
}

async function post(config: unknown, headers: Record<string, string> = {}): Promise<SubmitAnswer> {
  const response = await fetch(`${stack.apiUrl}/builds`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(config),
  });
  return { status: response.status, body: (await response.json()) as SubmitAnswer["body"] };
}

async function submitted(config: unknown, headers: Record<string, string> = {}): Promise<string> {
  const answer = await post(config, headers);
  if (!answer.body.id) throw new Error(`submit failed (${answer.status}): ${JSON.stringify(answer.body)}`);
  return answer.body.id;
}

/** Labels of the image the registry serves for a tag (read with plain registry API calls). */
async function registryLabels(repository: string, tag: string): Promise<Record<string, string>> {
  const authorization = `Basic ${Buffer.from(`${services.registryUsername}:${services.registryPassword}`).toString("base64")}`;
  const base = `http://${services.registryHost}/v2/${repository}`;
  const manifest = (await (
    await fetch(`${base}/manifests/${tag}`, { headers: { authorization, accept: "application/vnd.docker.distribution.manifest.v2+json" } })
  ).json()) as { config: { digest: string } };
  const config = (await (await fetch(`${base}/blobs/${manifest.config.digest}`, { headers: { authorization } })).json()) as {
    config: { Labels: Record<string, string> | null };
  };
  return config.config.Labels ?? {};
}

/** Ids of images on the daemon built for this build id (the generator labels every image with it). */
async function imagesBuiltFor(buildId: string): Promise<string[]> {
  const images = await docker.listImages({ filters: JSON.stringify({ label: [`ai.m1l0.build-id=${buildId}`] }) });
  return images.map((image) => image.Id);
}

function mnistFixture(edits: Record<string, string> = {}) {
  const fixture = createGitFixture(path.join(ROOT_DIR, "examples/mnist"), { "VERSION.txt": `${run}\n`, ...edits });
  cleanups.push(fixture.cleanup);
  return fixture;
}

/** Adds a commit to the fixture's main branch (the same way a user pushes a change). */
function pushCommit(fixture: { dir: string }, file: string, content: string): void {
  const work = mkdtempSync(path.join(tmpdir(), "m1l0-push-"));
  try {
    const git = (...args: string[]) => execFileSync("git", ["-c", "user.name=e2e", "-c", "user.email=e2e@localhost", ...args], { cwd: work, stdio: "pipe" });
    execFileSync("git", ["clone", "-q", path.join(fixture.dir, "repo.git"), work]);
    writeFileSync(path.join(work, file), content);
    git("commit", "-q", "-am", "change");
    git("push", "-q", "origin", "main");
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

function mnistConfig(source: string, revision: string, extra: Record<string, unknown> = {}) {
  return {
    service: "dockerhub",
    repository: "m1l0/e2e-buildkey",
    revision,
    framework: "python",
    pyversion: "3.11",
    resource: "cpu",
    entry: "main.py",
    source,
    ...extra,
  };
}

beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  await stack?.stop();
  for (const cleanup of cleanups) cleanup();
});

describe("one build per identity", () => {
  const fixture = mnistFixture();
  const tag = `key-${run}`;
  let firstId = "";
  let firstDigest = "";
  let firstKey = "";

  it("a build pushes its key as the image label ai.m1l0.build-key", async () => {
    firstId = await submitted(mnistConfig(fixture.url, tag));
    const record = await waitForBuild(stack.apiUrl, firstId);
    expect(record.status, await getLog(stack.apiUrl, firstId)).toBe("succeeded");
    expect(record.buildKey).toMatch(/^sha256:[0-9a-f]{64}$/);
    firstKey = record.buildKey!;
    firstDigest = record.image!.digest!;
    const labels = await registryLabels("m1l0/e2e-buildkey", tag);
    expect(labels["ai.m1l0.build-key"]).toBe(firstKey);
    expect(labels["ai.m1l0.build-id"]).toBe(firstId);
  });

  it("the same commit and config again finishes as `cached` with the existing digest: no clone, build or push", async () => {
    const id = await submitted(mnistConfig(fixture.url, tag));
    expect(id).not.toBe(firstId); // the first one finished: nothing to attach to
    const record = await waitForBuild(stack.apiUrl, id);
    const log = await getLog(stack.apiUrl, id);
    expect(record.status, log).toBe("cached");
    expect(record.buildKey).toBe(firstKey);
    expect(record.image?.digest).toBe(firstDigest);
    expect(Object.keys(record.timestamps)).toEqual(["queued", "fetching", "cached"]);
    expect(log).toContain("already holds this build");
    expect(log).not.toMatch(/cloning|\[build\]|\[push\]/);
    // nothing was built on the daemon for this request, and the tag still holds the first image
    expect(await imagesBuiltFor(id)).toEqual([]);
    expect((await registryLabels("m1l0/e2e-buildkey", tag))["ai.m1l0.build-id"]).toBe(firstId);
  });

  it("a change to any field that shapes the image builds again", async () => {
    const id = await submitted(mnistConfig(fixture.url, tag, { tags: [{ Key: "team", Value: "vision" }] }));
    const record = await waitForBuild(stack.apiUrl, id);
    expect(record.status, await getLog(stack.apiUrl, id)).toBe("succeeded");
    expect(record.buildKey).not.toBe(firstKey);
    expect(record.image?.digest).not.toBe(firstDigest);
    expect((await registryLabels("m1l0/e2e-buildkey", tag))["ai.m1l0.build-key"]).toBe(record.buildKey);
  });

  it("a new commit on the branch builds again, and the key names the new commit", async () => {
    const before = await submitted(mnistConfig(fixture.url, `${tag}-moving`));
    const first = await waitForBuild(stack.apiUrl, before);
    expect(first.status).toBe("succeeded");
    pushCommit(fixture, "main.py", "print('accuracy: 0.9999')\n");
    const after = await submitted(mnistConfig(fixture.url, `${tag}-moving`));
    const second = await waitForBuild(stack.apiUrl, after);
    expect(second.status, await getLog(stack.apiUrl, after)).toBe("succeeded");
    expect(second.commit).not.toBe(first.commit);
    expect(second.buildKey).not.toBe(first.buildKey);
  });
});

describe("identical requests while a build is in flight", () => {
  it("20 concurrent identical POSTs attach to one build: one job, one docker build, 20 identical answers", async () => {
    const fixture = mnistFixture({ "attach.txt": "attach\n" });
    const config = mnistConfig(fixture.url, `attach-${run}`);
    const answers = await Promise.all(Array.from({ length: 20 }, () => post(config)));
    const ids = new Set(answers.map((answer) => answer.body.id));
    expect(ids.size, JSON.stringify(answers)).toBe(1);
    const id = answers[0]!.body.id!;
    expect(answers.filter((answer) => answer.status === 202)).toHaveLength(1);
    expect(answers.filter((answer) => answer.status === 200 && answer.body.attached === true)).toHaveLength(19);

    // BullMQ keeps one hash per job at bull:<queue>:<jobId> (retention keeps finished ones)
    const redis = new Redis(services.redisUrl);
    try {
      const jobKeys = (await redis.keys(`bull:${stack.queueName}:bld_*`)).filter((key) => /^bull:[^:]+:bld_[^:]+$/.test(key));
      const ours: string[] = [];
      for (const key of jobKeys) {
        const data = JSON.parse((await redis.hget(key, "data")) ?? "{}") as { config?: { revision?: string } };
        if (data.config?.revision === config.revision) ours.push(key);
      }
      expect(ours).toEqual([`bull:${stack.queueName}:${id}`]);
    } finally {
      redis.disconnect();
    }
    const record = await waitForBuild(stack.apiUrl, id);
    expect(record.status, await getLog(stack.apiUrl, id)).toBe("succeeded");
    expect(record.attempts).toBe(1);

    // once it has finished, the same request is a new build (which finds the image: cached)
    const later = await post(config);
    expect(later.status).toBe(202);
    expect(later.body.id).not.toBe(id);
    expect((await waitForBuild(stack.apiUrl, later.body.id!)).status).toBe("cached");
  });

  it("two builds with different ids but the same key: one builds, the other waits and answers `cached`", async () => {
    const fixture = mnistFixture({ "claim.txt": "claim\n" });
    const config = mnistConfig(fixture.url, `claim-${run}`);
    const [a, b] = await Promise.all([
      submitted(config, { "idempotency-key": `claim-a-${run}` }),
      submitted(config, { "idempotency-key": `claim-b-${run}` }),
    ]);
    expect(a).not.toBe(b);
    const [ra, rb] = await Promise.all([waitForBuild(stack.apiUrl, a), waitForBuild(stack.apiUrl, b)]);
    const statuses = [ra.status, rb.status].sort();
    expect(statuses, (await getLog(stack.apiUrl, a)) + (await getLog(stack.apiUrl, b))).toEqual(["cached", "succeeded"]);
    expect(ra.image?.digest).toBe(rb.image?.digest);
    const waiter = ra.status === "cached" ? a : b;
    expect(await getLog(stack.apiUrl, waiter)).toContain("an identical build");
  });
});
