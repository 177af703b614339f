import Docker from "dockerode";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGitFixture, getLog, services, startStack, submit, waitForBuild, type RunningStack, registryDigest } from "../src/index.js";

/**
 * The import check before push, on the real stack: the worker runs the built image once (no
 * network, read-only, a deadline) with its checker, and a forgotten dependency fails the build
 * with MISSING_DEPENDENCY and the file, line and module, and the registry never gets the tag.
 */
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const run = Date.now().toString(36);
const emptyDir = mkdtempSync(path.join(tmpdir(), "m1l0-import-check-"));
const cleanups: Array<() => void> = [];
let stack: RunningStack;

function repo(files: Record<string, string>): string {
  const fixture = createGitFixture(emptyDir, files);
  cleanups.push(fixture.cleanup);
  return fixture.url;
}

const config = (source: string, marker: string, extra: Record<string, unknown> = {}) => ({
  service: "dockerhub",
  repository: "m1l0/e2e-import-check",
  revision: `${run}-${marker}`,
  framework: "python",
  pyversion: "3.11",
  entry: "main.py",
  source,
  ...extra,
});


/** containers of an image left on the daemon (the check's must be removed) */
const containersOf = async (image: string) => (await docker.listContainers({ all: true, filters: { ancestor: [image] } })).length;

beforeAll(async () => {
  stack = await startStack();
}, 120_000);

afterAll(async () => {
  await stack?.stop();
  for (const cleanup of cleanups) cleanup();
  rmSync(emptyDir, { recursive: true, force: true });
});

describe("import check before push (real worker, daemon and registry)", () => {
  it("fails a project that forgot a dependency with MISSING_DEPENDENCY, file, line and module; nothing is pushed", async () => {
    const source = repo({ "main.py": "import numpy as np\n\nfrom model import predict\n", "model.py": "import os\n\n\ndef predict():\n    import torchvision\n    return torchvision\n" });
    const id = await submit(stack.apiUrl, config(source, "missing"));
    const record = await waitForBuild(stack.apiUrl, id);
    const log = await getLog(stack.apiUrl, id);
    expect(record.status, log).toBe("failed");
    expect(record.error?.code).toBe("MISSING_DEPENDENCY");
    expect(record.error?.message).toBe('model.py:5 imports "torchvision", which is not installed in the image; add it to requirements.txt');
    expect(record.image?.digest).toBeUndefined();
    expect(Object.keys(record.timestamps)).not.toContain("pushing");
    expect(await registryDigest("m1l0/e2e-import-check", `${run}-missing`)).toBeNull();
    expect(log).toMatch(/\[build\] import check: failed, 1 missing module\(s\); 2 file\(s\), 4 import\(s\), python 3\.11\.\d+; \d+ ms \(checker [\d.]+ ms\), on step \d+'s image alongside the label step; nothing is pushed/);
    expect(log).not.toMatch(/\[push\]/);
    expect(await containersOf(`${services.registryHost}/m1l0/e2e-import-check:${run}-missing`)).toBe(0);
  });

  it("passes a guarded optional import with a note in the log, pushes, and says what the check cost", async () => {
    const source = repo({ "main.py": "import json\ntry:\n    import ujson as fast_json\nexcept ImportError:\n    fast_json = json\nimport numpy\nprint(fast_json.dumps({'ok': int(numpy.int64(1))}))\n" });
    const id = await submit(stack.apiUrl, config(source, "guarded"));
    const record = await waitForBuild(stack.apiUrl, id);
    const log = await getLog(stack.apiUrl, id);
    expect(record.status, log).toBe("succeeded");
    expect(log).toMatch(/\[build\] import check: note: main\.py:3 imports "ujson" under a guard/);
    const passed = /\[build\] import check: passed, 1 file\(s\), 3 import\(s\), python (3\.11\.\d+); (\d+) ms \(checker ([\d.]+) ms\)/.exec(log);
    expect(passed, log).not.toBeNull();
    console.log(`import check cost: ${passed![2]} ms in all (container create, start, wait, logs, remove), ${passed![3]} ms in the checker`);
    expect(await registryDigest("m1l0/e2e-import-check", `${run}-guarded`)).toBe(record.image?.digest);
    expect(log.indexOf("import check: passed")).toBeLessThan(log.indexOf("[push] pushing"));
  });

  it("skips a custom Dockerfile whose image has no Python, with a note, and pushes", async () => {
    const source = repo({ "Dockerfile": `FROM ${services.baseImageBusybox}\nCOPY main.py /app/main.py\nWORKDIR /app\n`, "main.py": "import torchvision\n" });
    const id = await submit(stack.apiUrl, config(source, "busybox", { dockerfile: "Dockerfile" }));
    const record = await waitForBuild(stack.apiUrl, id);
    const log = await getLog(stack.apiUrl, id);
    expect(record.status, log).toBe("succeeded");
    expect(log).toMatch(/\[build\] import check: skipped: the image has no python3/);
    expect(await registryDigest("m1l0/e2e-import-check", `${run}-busybox`)).toBe(record.image?.digest);
  });
});
