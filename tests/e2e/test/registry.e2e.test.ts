import { ECRClient, ListTagsForResourceCommand } from "@aws-sdk/client-ecr";
import Docker from "dockerode";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { startEcrStandIn, type EcrStandIn } from "../src/ecr-standin.js";
import { apiFetch, ROOT_DIR, createGitFixture, getLog, services, startStack, submit, waitForBuild, type RunningStack } from "../src/index.js";

const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const registryAuth = { username: services.registryUsername, password: services.registryPassword, serveraddress: services.registryHost };
const mnistDir = path.join(ROOT_DIR, "examples/mnist");
const mnistConfig = parse(readFileSync(path.join(mnistDir, "m1l0.yaml"), "utf8")) as Record<string, unknown>;
const run = Date.now().toString(36);
// the worker's AWS identity (default chain from env); s3rver only accepts this one, so S3 and ECR share it
const AWS_KEYS = { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER", AWS_REGION: "us-east-1" };

let standIn: EcrStandIn;
let fixtureUrl: string;
const stacks: RunningStack[] = [];
const cleanups: Array<() => void> = [];

/** A ~2 MB busybox image: these tests are about registries, not Python builds. */
function fastConfig(fields: Record<string, unknown>): Record<string, unknown> {
  return { ...mnistConfig, source: fixtureUrl, dockerfile: "Dockerfile.fast", ...fields };
}

async function stack(options: Parameters<typeof startStack>[0]): Promise<RunningStack> {
  const started = await startStack(options);
  stacks.push(started);
  return started;
}

function ecrWorkerEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...AWS_KEYS, ECR_REGION: "us-east-1", ECR_ENDPOINT: standIn.endpoint, ...extra };
}

async function build(apiUrl: string, config: Record<string, unknown>) {
  const id = await submit(apiUrl, config);
  return { id, record: await waitForBuild(apiUrl, id, 120_000) };
}

/** Proves the image is in the registry under the reported reference and digest. */
async function expectPullable(reference: string, digest: string): Promise<void> {
  await docker.getImage(reference).remove({ force: true });
  const stream = await docker.pull(reference, { authconfig: registryAuth });
  await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (error) => (error ? reject(error) : resolve())));
  const image = await docker.getImage(reference).inspect();
  const [name] = reference.split(/:(?=[^:/]+$)/);
  expect(image.RepoDigests).toContain(`${name}@${digest}`);
}

async function listTags(repositoryName: string): Promise<Record<string, string>> {
  // the same SDK the product uses, reading what the worker wrote
  const ecr = new ECRClient({ region: "us-east-1", endpoint: standIn.endpoint, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
  const repo = standIn.repositories.get(repositoryName);
  expect(repo, `repository ${repositoryName} exists`).toBeDefined();
  const { tags } = await ecr.send(new ListTagsForResourceCommand({ resourceArn: repo!.arn }));
  return Object.fromEntries((tags ?? []).map((tag) => [tag.Key, tag.Value]));
}

beforeAll(async () => {
  standIn = await startEcrStandIn({
    proxyEndpoint: `http://${services.registryHost}`,
    username: services.registryUsername,
    password: services.registryPassword,
    acceptedAccessKeyIds: ["S3RVER"],
  });
  const fixture = createGitFixture(mnistDir, { "Dockerfile.fast": `FROM ${services.baseImageBusybox}\nCOPY main.py /srv/main.py\nCMD ["echo", "fast image"]\n` });
  fixtureUrl = fixture.url;
  cleanups.push(fixture.cleanup);
});

afterAll(async () => {
  await Promise.all(stacks.map((running) => running.stop()));
  await standIn?.close();
  for (const cleanup of cleanups) cleanup();
});

describe("ECR (through @aws-sdk/client-ecr against the ECR stand-in; data plane = the real registry)", () => {
  it("creates a missing repository with the request's tags, reuses it next time, and caches the token", async () => {
    standIn.setTokenTtl(12 * 3600_000);
    const running = await stack({ workerEnv: ecrWorkerEnv() });
    const repository = `e2e-${run}/mnist`;
    standIn.resetCounts();

    const first = await build(running.apiUrl, fastConfig({ service: "ecr", repository, revision: "a", tags: [{ Key: "Project", Value: "mnist" }, { Key: "Team", Value: "e2e" }] }));
    expect(first.record.status, `${first.record.error?.message}\n${await getLog(running.apiUrl, first.id)}`).toBe("succeeded");
    expect(first.record.image).toMatchObject({ registry: services.registryHost, repository, tag: "a", reference: `${services.registryHost}/${repository}:a` });
    expect(first.record.image?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(standIn.createOutcomes).toEqual(["created"]);
    expect(await listTags(repository)).toEqual({ Project: "mnist", Team: "e2e" });
    expect(standIn.repositories.get(repository)).toMatchObject({ imageTagMutability: "MUTABLE", scanOnPush: false });
    await expectPullable(first.record.image!.reference, first.record.image!.digest!);

    const second = await build(running.apiUrl, fastConfig({ service: "ecr", repository, revision: "b", tags: [{ Key: "Project", Value: "mnist" }, { Key: "Stage", Value: "two" }] }));
    expect(second.record.status, second.record.error?.message).toBe("succeeded");
    expect(standIn.calls.CreateRepository).toBe(1); // reused, not re-created
    expect(standIn.calls.TagResource).toBe(1); // the existing repository got the new request's tags
    expect(await listTags(repository)).toEqual({ Project: "mnist", Team: "e2e", Stage: "two" });
    expect(standIn.calls.GetAuthorizationToken).toBe(1); // one token served both builds
    await expectPullable(second.record.image!.reference, second.record.image!.digest!);
  });

  it("concurrent builds in one worker share a single token request; <project> repositories work", async () => {
    standIn.setTokenTtl(12 * 3600_000);
    const running = await stack({ workerEnv: ecrWorkerEnv({ ECR_TAG_MUTABILITY: "IMMUTABLE", ECR_SCAN_ON_PUSH: "true" }), concurrency: 3 });
    standIn.resetCounts();
    const repository = `solo-${run}`;
    const results = await Promise.all(["x", "y", "z"].map((revision) => build(running.apiUrl, fastConfig({ service: "ecr", repository, revision }))));
    for (const { record } of results) expect(record.status, record.error?.message).toBe("succeeded");
    expect(standIn.calls.GetAuthorizationToken).toBe(1);
    expect(standIn.repositories.get(repository)).toMatchObject({ imageTagMutability: "IMMUTABLE", scanOnPush: true });
    expect(results.map(({ record }) => record.image?.reference).sort()).toEqual(["x", "y", "z"].map((tag) => `${services.registryHost}/${repository}:${tag}`));
  });

  it("fetches a new token once the cached one nears expiry", async () => {
    // tokens live 62 s and are refreshed 60 s early: each is usable for about 2 s
    standIn.setTokenTtl(62_000);
    const running = await stack({ workerEnv: ecrWorkerEnv({ ECR_TOKEN_REFRESH_MARGIN_SECONDS: "60" }) });
    standIn.resetCounts();
    const repository = `refresh-${run}/mnist`;
    const first = await build(running.apiUrl, fastConfig({ service: "ecr", repository, revision: "one" }));
    expect(first.record.status, first.record.error?.message).toBe("succeeded");
    const afterFirst = standIn.calls.GetAuthorizationToken ?? 0;
    expect(afterFirst).toBeGreaterThanOrEqual(1);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const second = await build(running.apiUrl, fastConfig({ service: "ecr", repository, revision: "two" }));
    expect(second.record.status, second.record.error?.message).toBe("succeeded");
    expect(standIn.calls.GetAuthorizationToken ?? 0).toBeGreaterThan(afterFirst);
    standIn.setTokenTtl(12 * 3600_000);
  });

  it("two workers racing to create the same repository both succeed; one create wins", async () => {
    standIn.setTokenTtl(12 * 3600_000);
    const [workerA, workerB] = await Promise.all([stack({ workerEnv: ecrWorkerEnv() }), stack({ workerEnv: ecrWorkerEnv() })]);
    standIn.resetCounts();
    const repository = `race-${run}/mnist`;
    // both DescribeRepositories answers are held until both workers asked: both see "missing"
    standIn.holdDescribes(2);
    const [a, b] = await Promise.all([
      build(workerA!.apiUrl, fastConfig({ service: "ecr", repository, revision: "a", tags: [{ Key: "FromA", Value: "1" }] })),
      build(workerB!.apiUrl, fastConfig({ service: "ecr", repository, revision: "b", tags: [{ Key: "FromB", Value: "1" }] })),
    ]);
    expect(a.record.status, a.record.error?.message).toBe("succeeded");
    expect(b.record.status, b.record.error?.message).toBe("succeeded");
    expect([...standIn.createOutcomes].sort()).toEqual(["already-exists", "created"]);
    // the loser tagged the winner's repository, so no request's tags were lost
    expect(await listTags(repository)).toEqual({ FromA: "1", FromB: "1" });
  });

  it("AWS credentials ECR refuses fail the build once with REGISTRY_AUTH_FAILED", async () => {
    const running = await stack({ workerEnv: ecrWorkerEnv({ AWS_ACCESS_KEY_ID: "AKIANOTKNOWNTOTHESTANDIN" }) });
    const { id, record } = await build(running.apiUrl, fastConfig({ service: "ecr", repository: `denied-${run}/mnist`, revision: "a" }));
    expect(record.status).toBe("failed");
    expect(record.error?.code).toBe("REGISTRY_AUTH_FAILED");
    expect(record.error?.message).toMatch(/^registry authentication failed for ECR \(us-east-1\)/);
    expect(record.attempts).toBe(1);
    expect(await getLog(running.apiUrl, id)).not.toMatch(/will retry/);
  });
});

describe("Docker Hub credentials and other OCI registries", () => {
  let running: RunningStack;
  let secretDir: string;

  beforeAll(async () => {
    secretDir = mkdtempSync(path.join(tmpdir(), "m1l0-registry-creds-"));
    const credentialsFile = path.join(secretDir, "registries");
    writeFileSync(credentialsFile, `# host=username:password\n${services.registryHost}=${services.registryUsername}:${services.registryPassword}\n`, { mode: 0o600 });
    cleanups.push(() => rmSync(secretDir, { recursive: true, force: true }));
    running = await stack({
      // Docker Hub (here: the local registry) with a wrong token; the OCI target with the right one
      workerEnv: {
        DOCKERHUB_TOKEN_FILE: "",
        DOCKERHUB_TOKEN: "not-the-registry-password",
        REGISTRY_ALLOWLIST: services.registryHost,
        REGISTRY_CREDENTIALS_FILE: credentialsFile,
      },
      apiEnv: { REGISTRY_ALLOWLIST: services.registryHost },
    });
  });

  it("a Docker Hub push rejected for credentials fails once, immediately, with a clear message", async () => {
    const { id, record } = await build(running.apiUrl, fastConfig({ service: "dockerhub", repository: "m1l0/mnist", revision: `badauth-${run}` }));
    expect(record.status).toBe("failed");
    expect(record.error?.code).toBe("REGISTRY_AUTH_FAILED");
    expect(record.error?.message).toMatch(new RegExp(`^registry authentication failed for ${services.registryHost.replace(/\./g, "\\.")}`));
    expect(record.attempts).toBe(1);
    expect(Object.keys(record.timestamps)).toEqual(["queued", "fetching", "building", "pushing", "failed"]);
    const log = await getLog(running.apiUrl, id);
    expect(log).not.toMatch(/will retry/);
    expect(log).not.toContain("not-the-registry-password");
  });

  it("pushes to an allowlisted OCI registry with that host's credentials", async () => {
    const repository = `oci-${run}/team/mnist`; // three components: not a Docker Hub name
    const { record } = await build(running.apiUrl, fastConfig({ service: "dockerhub", registry: services.registryHost, repository, revision: "v1" }));
    expect(record.status, record.error?.message).toBe("succeeded");
    expect(record.image).toMatchObject({ registry: services.registryHost, repository, tag: "v1", reference: `${services.registryHost}/${repository}:v1` });
    await expectPullable(record.image!.reference, record.image!.digest!);
  });

  it("rejects a registry that is not allowlisted (or not a host) before enqueueing", async () => {
    for (const [registry, message] of [
      ["ghcr.io", /allowlist/],
      ["https://ghcr.io/v2", /host\[:port\]/],
      ["127.0.0.1:99999", /host\[:port\]/],
    ] as const) {
      const response = await apiFetch(`${running.apiUrl}/builds`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(fastConfig({ service: "dockerhub", registry, repository: "team/mnist" })),
      });
      const body = (await response.json()) as { error: { code: string; issues: Array<{ field: string; message: string }> } };
      expect(response.status, registry).toBe(400);
      expect(body.error.code).toBe("VALIDATION_FAILED");
      expect(body.error.issues).toContainEqual({ field: "registry", message: expect.stringMatching(message) });
    }
    const withEcr = await apiFetch(`${running.apiUrl}/builds`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(fastConfig({ service: "ecr", registry: services.registryHost, repository: "team/mnist" })),
    });
    expect(withEcr.status).toBe(400);
  });
});
