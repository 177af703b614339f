import Docker from "dockerode";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { ROOT_DIR, createGitFixture, getLog, services, startStack, submit, waitForBuild, type RunningStack, runImage, layerOf, pullFromRegistry } from "../src/index.js";

const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const mnistDir = path.join(ROOT_DIR, "examples/mnist");
const mnistConfig = parse(readFileSync(path.join(mnistDir, "m1l0.yaml"), "utf8")) as Record<string, unknown>;
const run = Date.now().toString(36);

let stack: RunningStack;
const cleanups: Array<() => void> = [];




beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  await stack?.stop();
  for (const cleanup of cleanups) cleanup();
});

describe("examples/mnist end to end (real git server, docker, registry)", () => {
  it("POST → succeeded → image pulled from the registry runs and prints its accuracy", async () => {
    const id = await submit(stack.apiUrl, { ...mnistConfig, revision: `e2e-${run}` });
    const record = await waitForBuild(stack.apiUrl, id);
    expect(record.error, (await getLog(stack.apiUrl, id)) + stack.logs.join("\n")).toBeUndefined();
    expect(record.status).toBe("succeeded");
    expect(Object.keys(record.timestamps)).toEqual(["queued", "fetching", "building", "pushing", "succeeded"]);
    expect(record.commit).toMatch(/^[0-9a-f]{40}$/);
    expect(record.image).toMatchObject({ registry: services.registryHost, repository: "m1l0/mnist", tag: `e2e-${run}`, reference: `${services.registryHost}/m1l0/mnist:e2e-${run}` });
    expect(record.image?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);

    // the image must come from the registry, not the worker's local copy
    await docker.getImage(record.image!.reference).remove({ force: true });
    await pullFromRegistry(record.image!.reference);
    const pulled = await docker.getImage(record.image!.reference).inspect();
    expect(pulled.RepoDigests).toContain(`${services.registryHost}/m1l0/mnist@${record.image!.digest}`);
    expect(pulled.Config.Labels).toMatchObject({ "org.opencontainers.image.revision": record.commit, "ai.m1l0.build-id": id, "ai.m1l0.tag.Project": "mnist" });
    const output = await runImage(record.image!.reference);
    expect(output).toMatch(/^accuracy: 0\.\d{4}$/m);

    // ignores are applied: data/ and *.md are not in the image; the generated Dockerfile neither
    const listing = await runImage(record.image!.reference, { entrypoint: ["python3", "-c", "import os; print(sorted(os.listdir('/app')))"] });
    expect(listing).toContain("main.py");
    expect(listing).not.toContain("data");
    expect(listing).not.toContain("README.md");
    expect(listing).not.toContain(".m1l0.Dockerfile");

    const log = await getLog(stack.apiUrl, id);
    expect(log).toMatch(/\[fetch\] resolved commit [0-9a-f]{40}/);
    expect(log).toMatch(/\[build\] Step \d+\/\d+ : RUN python3 -m pip install/);
    expect(log).toMatch(/\[push\] pushed .*@sha256:/);
    // the import check ran on the image before the push: numpy and the project's model.py resolve
    expect(log).toMatch(/\[build\] import check: passed, 2 file\(s\), \d+ import\(s\), python 3\.11/);
    // on the image of the generated Dockerfile's last file step, while the daemon committed the labels
    expect(log).toMatch(/\[build\] import check: passed, .*, on step \d+'s image alongside the label step$/m);
  });

  it("a code-only change reuses the dependency layer", async () => {
    const original = createGitFixture(mnistDir);
    const changed = createGitFixture(mnistDir, { "main.py": readFileSync(path.join(mnistDir, "main.py"), "utf8").replace('EPOCHS", "15"', 'EPOCHS", "12"') });
    cleanups.push(original.cleanup, changed.cleanup);
    const first = await waitForBuild(stack.apiUrl, await submit(stack.apiUrl, { ...mnistConfig, source: original.url, revision: `dep-a-${run}` }));
    expect(first.status, first.error?.message).toBe("succeeded");
    const secondId = await submit(stack.apiUrl, { ...mnistConfig, source: changed.url, revision: `dep-b-${run}` });
    const second = await waitForBuild(stack.apiUrl, secondId);
    expect(second.status, second.error?.message).toBe("succeeded");
    expect(second.commit).not.toBe(first.commit);

    const log = await getLog(stack.apiUrl, secondId);
    const pipLayerA = await layerOf(first.image!.reference, /pip install/);
    const pipLayerB = await layerOf(second.image!.reference, /pip install/);
    expect(pipLayerA).toBeDefined();
    expect(pipLayerB, log).toBe(pipLayerA);
    const codeLayerA = await layerOf(first.image!.reference, /COPY .* in \.\/ *$|COPY dir:/);
    const codeLayerB = await layerOf(second.image!.reference, /COPY .* in \.\/ *$|COPY dir:/);
    expect(codeLayerB).not.toBe(codeLayerA);
    // and the build log says so
    const pipStep = log.indexOf("RUN python3 -m pip install");
    expect(pipStep).toBeGreaterThan(0);
    expect(log.slice(pipStep, pipStep + 300)).toMatch(/Using cache/);
  });

  it("clones a token-protected repository with the worker's credentials", async () => {
    const id = await submit(stack.apiUrl, { ...mnistConfig, source: `${services.gitServerUrl}/private/mnist.git#v1`, revision: `private-${run}` });
    const record = await waitForBuild(stack.apiUrl, id);
    expect(record.status, record.error?.message).toBe("succeeded");
    const log = await getLog(stack.apiUrl, id);
    expect(log).not.toContain(services.gitPrivateToken);
  });
});

describe("failures say why", () => {
  it.each([
    ["a missing entry file", { entry: "train.py" }, {}, "ENTRY_NOT_FOUND", /entry file "train.py" was not found/],
    ["a requirement that cannot be installed", {}, { "requirements.txt": "numpy\nno-such-package-m1l0==9.9.9\n" }, "DEPENDENCY_INSTALL_FAILED", /requirements\.txt failed.*no-such-package-m1l0/],
    ["an unknown git ref", { sourceSuffix: "#no-such-branch" }, {}, "SOURCE_NOT_FOUND", /no-such-branch/],
    ["a broken custom Dockerfile", { dockerfile: "Dockerfile.custom" }, { "Dockerfile.custom": "FROM m1l0-local/busybox:latest\nFROBNICATE now\n" }, "DOCKERFILE_ERROR", /unknown instruction/i],
  ])("%s", async (_label, overrides, edits, code, message) => {
    const fixture = createGitFixture(mnistDir, edits as Record<string, string>);
    cleanups.push(fixture.cleanup);
    const { sourceSuffix, ...fields } = overrides as { sourceSuffix?: string };
    const id = await submit(stack.apiUrl, { ...mnistConfig, ...fields, source: fixture.url + (sourceSuffix ?? ""), revision: `fail-${run}` });
    const record = await waitForBuild(stack.apiUrl, id);
    expect(record.status).toBe("failed");
    expect(record.error?.code).toBe(code);
    expect(record.error?.message).toMatch(message);
    expect(record.attempts).toBe(1); // permanent failures are not retried
  });

  it("uses a custom Dockerfile from the source as is", async () => {
    const fixture = createGitFixture(mnistDir, { "docker/Dockerfile": `FROM ${services.baseImageBusybox}\nCOPY main.py /srv/main.py\nCMD ["echo", "custom dockerfile used"]\n` });
    cleanups.push(fixture.cleanup);
    const id = await submit(stack.apiUrl, { ...mnistConfig, dockerfile: "docker/Dockerfile", source: fixture.url, revision: `custom-${run}` });
    const record = await waitForBuild(stack.apiUrl, id);
    expect(record.status, record.error?.message).toBe("succeeded");
    expect(await runImage(record.image!.reference)).toContain("custom dockerfile used");
  });
});
