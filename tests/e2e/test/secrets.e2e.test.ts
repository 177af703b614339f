import { DeleteObjectCommand, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Redis } from "ioredis";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { findNeedles, scanRedis as scanRedisOf, scanS3 as scanS3Of, startWebhookReceiver, type Finding, type WebhookReceiver } from "@m1l0/testkit";
import { DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verifyWebhookSignature } from "@m1l0/webhooks";
import { startEcrStandIn, type EcrStandIn } from "../src/ecr-standin.js";
import { apiFetch, ROOT_DIR, createGitFixture, getBuild, getLog, services, startStack, submit, waitForBuild, type RunningStack } from "../src/index.js";

const mnistDir = path.join(ROOT_DIR, "examples/mnist");
const mnistConfig = parse(readFileSync(path.join(mnistDir, "m1l0.yaml"), "utf8")) as Record<string, unknown>;
const run = Date.now().toString(36);
const AWS_SECRET_ACCESS_KEY = "S3RVER"; // s3rver accepts only this identity; the worker's ECR calls use it too
const WEBHOOK_SECRET = `whsec-scan-${randomUUID()}`;
const webhookDir = mkdtempSync(path.join(tmpdir(), "m1l0-secret-hooks-"));
let receiver: WebhookReceiver;

let standIn: EcrStandIn;
let stack: RunningStack;
let redis: Redis;
let s3: S3Client;
const cleanups: Array<() => void> = [];
const scanRedis = (needles: readonly string[]) => scanRedisOf(redis, needles);
const scanS3 = (needles: readonly string[]) => scanS3Of(s3, services.s3Bucket, needles);

beforeAll(async () => {
  redis = new Redis(services.redisUrl, { maxRetriesPerRequest: 3 });
  s3 = new S3Client({ region: "us-east-1", endpoint: services.s3Endpoint, forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: AWS_SECRET_ACCESS_KEY } });
  standIn = await startEcrStandIn({
    proxyEndpoint: `http://${services.registryHost}`,
    username: services.registryUsername,
    password: services.registryPassword,
    acceptedAccessKeyIds: ["S3RVER"],
  });
  // webhooks on, signing with a secret the scan then looks for everywhere
  receiver = await startWebhookReceiver();
  writeFileSync(path.join(webhookDir, "hook.secret"), WEBHOOK_SECRET, { mode: 0o600 });
  const webhooksFile = path.join(webhookDir, "webhooks.yaml");
  writeFileSync(webhooksFile, `endpoints:\n  - name: scan\n    url: ${receiver.url}\n    secretFile: hook.secret\n    events: ["*"]\n`);
  const webhookEnv = { WEBHOOKS_FILE: webhooksFile, WEBHOOK_ALLOW_HTTP: "true", WEBHOOK_HOST_ALLOWLIST: "127.0.0.0/8" };
  stack = await startStack({
    workerEnv: {
      ...webhookEnv,
      AWS_ACCESS_KEY_ID: "S3RVER",
      AWS_SECRET_ACCESS_KEY,
      ECR_REGION: "us-east-1",
      ECR_ENDPOINT: standIn.endpoint,
      REGISTRY_ALLOWLIST: services.registryHost,
      REGISTRY_CREDENTIALS: `${services.registryHost}=${services.registryUsername}:${services.registryPassword}`,
      LOG_LEVEL: "debug", // the most our processes ever log
    },
    apiEnv: { ...webhookEnv, REGISTRY_ALLOWLIST: services.registryHost, LOG_LEVEL: "debug" },
  });
});

afterAll(async () => {
  await stack?.stop();
  await standIn?.close();
  await receiver?.close();
  rmSync(webhookDir, { recursive: true, force: true });
  redis?.disconnect();
  for (const cleanup of cleanups) cleanup();
});

describe("credentials never leak", () => {
  it("the scan finds a planted secret in Redis and S3 (so an empty result means something)", async () => {
    const marker = `m1l0-planted-marker-${randomUUID()}`;
    const hashKey = `m1l0:e2e-secret-scan:${run}:hash`;
    const streamKey = `m1l0:e2e-secret-scan:${run}:stream`;
    const objectKey = `e2e-secret-scan/${run}.json.gz`;
    await redis.hset(hashKey, "data", JSON.stringify({ nested: { value: marker } }));
    await redis.xadd(streamKey, "*", "e", `line with ${marker} inside`);
    await s3.send(new PutObjectCommand({ Bucket: services.s3Bucket, Key: objectKey, Body: gzipSync(`{"x":"${marker}"}`) }));
    try {
      const redisFindings = await scanRedis([marker]);
      expect(redisFindings.map((finding) => finding.where).sort()).toEqual([`redis hash ${hashKey}`, `redis stream ${streamKey}`]);
      expect((await scanS3([marker])).map((finding) => finding.where)).toEqual([`s3 object ${objectKey} (gunzipped)`]);
    } finally {
      await redis.del(hashKey, streamKey);
      await s3.send(new DeleteObjectCommand({ Bucket: services.s3Bucket, Key: objectKey }));
    }
    expect(await scanRedis([marker])).toEqual([]);
    expect(await scanS3([marker])).toEqual([]);
  });

  it("after ECR, Docker Hub, OCI-registry and private-git builds, no password or token is anywhere", async () => {
    const fixture = createGitFixture(mnistDir, { "Dockerfile.fast": `FROM ${services.baseImageBusybox}\nCOPY main.py /srv/main.py\n` });
    cleanups.push(fixture.cleanup);
    const fast = { ...mnistConfig, source: fixture.url, dockerfile: "Dockerfile.fast" };
    const configs = [
      { ...fast, service: "ecr", repository: `secrets-${run}/mnist`, revision: "ecr" },
      { ...fast, service: "dockerhub", repository: "m1l0/mnist", revision: `secrets-hub-${run}` },
      { ...fast, service: "dockerhub", registry: services.registryHost, repository: `secrets-${run}/oci/mnist`, revision: "oci" },
      { ...mnistConfig, source: `${services.gitServerUrl}/private/mnist.git#v1`, revision: `secrets-git-${run}` },
    ];
    // the last build goes in with a user token, so a second token's path is searched too
    const asAlice = async (config: Record<string, unknown>) => {
      const response = await apiFetch(`${stack.apiUrl}/builds`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${stack.tokens.alice}` }, body: JSON.stringify(config) });
      expect(response.status).toBe(202);
      return ((await response.json()) as { id: string }).id;
    };
    const ids = await Promise.all(configs.map((config, index) => (index === configs.length - 1 ? asAlice(config) : submit(stack.apiUrl, config))));
    // and a refused attempt: bob reading alice's build
    expect((await apiFetch(`${stack.apiUrl}/builds/${ids.at(-1)}`, { headers: { authorization: `Bearer ${stack.tokens.bob}` } })).status).toBe(404);
    const records = await Promise.all(ids.map((id) => waitForBuild(stack.apiUrl, id)));
    for (const record of records) expect(record.status, `${record.id}: ${record.error?.message}`).toBe("succeeded");
    expect(standIn.issuedTokens.length).toBeGreaterThanOrEqual(1);

    // every build's webhook went out, signed with the secret (so the secret was in use when we scan)
    const deadline = Date.now() + 60_000;
    const delivered = () => new Set(receiver.received.map((got) => (JSON.parse(got.body) as { build: { id: string } }).build.id));
    while (!ids.every((id) => delivered().has(id)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    expect(ids.filter((id) => !delivered().has(id))).toEqual([]);
    for (const got of receiver.received) {
      expect(verifyWebhookSignature(WEBHOOK_SECRET, { signature: got.headers[SIGNATURE_HEADER] as string, timestamp: got.headers[TIMESTAMP_HEADER] as string }, got.body), String(got.headers[DELIVERY_HEADER])).toBe(true);
    }

    const ecrTokens = [...new Set(standIn.issuedTokens)];
    const secrets = [
      services.registryPassword,
      services.gitPrivateToken,
      WEBHOOK_SECRET,
      AWS_SECRET_ACCESS_KEY,
      // the API tokens the builds were submitted with (e2e helpers send the admin one)
      stack.tokens.admin,
      stack.tokens.alice,
      stack.tokens.bob,
      ...ecrTokens,
      ...ecrTokens.map((token) => Buffer.from(token, "base64").toString("utf8")),
      // what Docker's X-Registry-Auth header would carry, in case an authconfig were stored
      Buffer.from(JSON.stringify({ username: services.registryUsername, password: services.registryPassword })).toString("base64"),
    ];

    const findings: Finding[] = [];
    for (const id of ids) {
      findNeedles(`build log ${id}`, await getLog(stack.apiUrl, id), secrets, findings);
      findNeedles(`GET /builds/${id}`, JSON.stringify(await getBuild(stack.apiUrl, id)), secrets, findings);
    }
    findNeedles("api/worker process logs", stack.logs.join("\n"), secrets, findings);
    findNeedles("GET /webhooks/deliveries", await (await apiFetch(`${stack.apiUrl}/webhooks/deliveries?limit=500`)).text(), secrets, findings);
    findings.push(...(await scanRedis(secrets)), ...(await scanS3(secrets)));
    expect(findings).toEqual([]);
    // the scan looked at real data: our builds' records and logs are in Redis
    expect(stack.logs.some((line) => line.includes("build succeeded"))).toBe(true);
  });
});
