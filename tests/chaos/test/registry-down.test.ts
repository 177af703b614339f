import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getLog, reportFigures, services, sleeperRepo, startPrivateRegistry, startStack, submit, terminalEvents, waitForBuild, waitUntil, type PrivateService, type RunningStack } from "@m1l0/e2e";
import { CHAOS_WORKER_ENV, seconds, chaosFile } from "../src/index.js";

// (d) The registry (a private one) is down when the push starts and comes back: the push is
// retried within the attempt and the build succeeds with the image in that registry.
const { run, cleanups } = chaosFile();

describe("chaos: registry down during the push, then back", () => {
  let registry: PrivateService;
  let stack: RunningStack;
  beforeAll(async () => {
    registry = await startPrivateRegistry();
    stack = await startStack({ concurrency: 1, workerEnv: { ...CHAOS_WORKER_ENV, DOCKERHUB_REGISTRY: registry.address, PUSH_RETRIES: "5" } });
  });
  afterAll(async () => {
    await stack?.stop();
    await registry?.destroy();
  });

  it("the build succeeds once the registry is back; the pushed digest is what the registry serves", async () => {
    const repo = sleeperRepo(`chaos-registry-${run}`, 2);
    cleanups.push(repo.cleanup);
    const id = await submit(stack.apiUrl, { service: "dockerhub", repository: "m1l0/chaos-registry", revision: run, source: repo.url, dockerfile: "Dockerfile" });
    await registry.stop();
    const downAt = Date.now();
    await waitUntil(stack.apiUrl, id, (record) => record.status === "pushing" || record.status === "failed", 60_000);
    // wait for a failed push to be retried, then bring the registry back
    const deadline = Date.now() + 30_000;
    while (!/push failed .*retrying/.test(await getLog(stack.apiUrl, id)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200));
    await registry.start();
    const downMs = Date.now() - downAt;

    const record = await waitForBuild(stack.apiUrl, id, 120_000);
    const log = await getLog(stack.apiUrl, id);
    expect(record.status, log).toBe("succeeded");
    const retries = log.split("\n").filter((line) => /push failed .*retrying/.test(line)).length;
    expect(retries).toBeGreaterThanOrEqual(1);
    expect(await terminalEvents(stack.apiUrl, id)).toEqual(["succeeded"]);
    const head = await fetch(`http://${registry.address}/v2/${record.image!.repository}/manifests/${record.image!.tag}`, {
      method: "HEAD",
      headers: {
        authorization: `Basic ${Buffer.from(`${services.registryUsername}:${services.registryPassword}`).toString("base64")}`,
        accept: "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
      },
    });
    expect(head.status).toBe(200);
    expect(head.headers.get("docker-content-digest")).toBe(record.image!.digest);
    reportFigures("chaos d (registry down during push)", `registry down ${seconds(downMs)} s; ${retries} push retries within attempt ${record.attempts}; succeeded, digest verified in the registry`);
  });
});
