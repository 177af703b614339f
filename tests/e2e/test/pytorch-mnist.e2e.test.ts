import Docker from "dockerode";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ROOT_DIR, apiFetch, createGitFixture, getLog, services, startStack, submit, waitForBuild, type RunningStack, runImage, layerOf, pullFromRegistry } from "../src/index.js";

// examples/pytorch-mnist on the PyTorch base built here (scripts/base-images.sh pytorch) and
// offered by packages/catalog/local-additions.yaml, which the test kit's stack loads.
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const exampleDir = path.join(ROOT_DIR, "examples/pytorch-mnist");
const config = parse(readFileSync(path.join(exampleDir, "m1l0.yaml"), "utf8")) as Record<string, unknown>;
const TORCH_BASE = "m1l0-local/pytorch:1.13.1-py3.11";
const run = Date.now().toString(36);
const BUILD_DEADLINE_MS = 240_000;

let stack: RunningStack;
const cleanups: Array<() => void> = [];


beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  await stack?.stop();
  for (const cleanup of cleanups) cleanup();
});

describe("examples/pytorch-mnist end to end (PyTorch base built here)", () => {
  it("builds on the local PyTorch base, pushes, and the pulled image trains and prints its accuracy", { timeout: 2 * BUILD_DEADLINE_MS }, async () => {
    const started = Date.now();
    const id = await submit(stack.apiUrl, { ...config, revision: `e2e-${run}` });
    const record = await waitForBuild(stack.apiUrl, id, BUILD_DEADLINE_MS);
    const log = await getLog(stack.apiUrl, id);
    expect(record.error, log + stack.logs.join("\n")).toBeUndefined();
    expect(record.status).toBe("succeeded");
    // the record says which image the build really started FROM
    expect(record.baseImage).toBe(TORCH_BASE);
    expect(record.image?.reference).toBe(`${services.registryHost}/m1l0/pytorch-mnist:e2e-${run}`);
    expect(log).toContain(`[fetch] base image ${TORCH_BASE}`);
    // torch and the project's model.py resolve in the import check, before the push
    expect(log).toMatch(/\[build\] import check: passed, 2 file\(s\), \d+ import\(s\), python 3\.11/);
    console.info(`pytorch-mnist: build + push ${((Date.now() - started) / 1000).toFixed(1)} s`);

    await docker.getImage(record.image!.reference).remove({ force: true });
    await pullFromRegistry(record.image!.reference);
    const pulled = await docker.getImage(record.image!.reference).inspect();
    expect(pulled.RepoDigests).toContain(`${services.registryHost}/m1l0/pytorch-mnist@${record.image!.digest}`);
    console.info(`pytorch-mnist: image ${(pulled.Size / 1e6).toFixed(0)} MB`);
    const output = await runImage(record.image!.reference);
    expect(output).toMatch(/^torch 1\.13\.\S+, \d+ thread\(s\), trained in [\d.]+ s$/m);
    const accuracy = Number(/^accuracy: (0\.\d{4}|1\.0000)$/m.exec(output)?.[1]);
    expect(accuracy, output).toBeGreaterThan(0.8);
  });

  it("a code-only change reuses the base's layers and rebuilds only the code", { timeout: 2 * BUILD_DEADLINE_MS }, async () => {
    const changed = createGitFixture(exampleDir, { "main.py": readFileSync(path.join(exampleDir, "main.py"), "utf8").replace('"EPOCHS", "6"', '"EPOCHS", "5"') });
    cleanups.push(changed.cleanup);
    const first = await waitForBuild(stack.apiUrl, await submit(stack.apiUrl, { ...config, revision: `code-a-${run}` }), BUILD_DEADLINE_MS);
    expect(first.status, first.error?.message).toBe("succeeded");
    const second = await waitForBuild(stack.apiUrl, await submit(stack.apiUrl, { ...config, source: changed.url, revision: `code-b-${run}` }), BUILD_DEADLINE_MS);
    expect(second.status, second.error?.message).toBe("succeeded");
    const codeA = await layerOf(first.image!.reference, /COPY .* in \.\/ *$|COPY dir:/);
    const codeB = await layerOf(second.image!.reference, /COPY .* in \.\/ *$|COPY dir:/);
    expect(codeA).toBeDefined();
    expect(codeB).not.toBe(codeA);
    const [baseA, baseB] = await Promise.all([first, second].map(async (b) => (await docker.getImage(b.image!.reference).inspect()).RootFS.Layers?.[0]));
    const torchBase = (await docker.getImage(TORCH_BASE).inspect()).RootFS.Layers?.[0];
    expect(baseA).toBe(torchBase);
    expect(baseB).toBe(torchBase);
  });

  it("another Python version for pytorch 1.13.1 is refused up front, naming the field", async () => {
    const response = await apiFetch(`${stack.apiUrl}/builds`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...config, pyversion: "3.12", revision: `py312-${run}` }),
    });
    expect(response.status).toBe(400);
    expect(JSON.stringify(await response.json())).toMatch(/pyversion.*3\.12.*not available for pytorch 1\.13\.1.*3\.10, 3\.11|pyversion.*3\.12.*not available for pytorch 1\.13\.1.*3\.11, 3\.10/);
  });
});
