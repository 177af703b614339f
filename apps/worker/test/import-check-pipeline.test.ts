import { NO_WEBHOOKS } from "@m1l0/webhooks";
import { isBuilderError } from "@m1l0/config";
import type { PendingUploads } from "@m1l0/queue";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { createPipelineDeps } from "../src/deps.js";
import { FixedNetworkEgress } from "../src/egress/index.js";
import { loadWorkerEnv } from "../src/env.js";
import { runBuild } from "../src/pipeline.js";
import { FakeImageBuilder } from "./support/fake-builder.js";
import { hostPython } from "./support/host-python.js";
import { pipelineFixture } from "./support/pipeline-fixture.js";

// The import check as a phase of runBuild: the fake builder runs the shipped checker with the
// host's python3 on the built image's files; the real image is exercised by tests/e2e.
const fixture = pipelineFixture();
afterAll(() => fixture.close());

const importCheck = { timeoutMs: 60_000 };
const statuses = async (id: string) => (await fixture.store.readEvents(id, "0", { count: 1000 })).flatMap((item) => (item.event.type === "status" ? [item.event.status] : []));
const lines = async (id: string) => (await fixture.store.readEvents(id, "0", { count: 1000 })).flatMap((item) => (item.event.type === "log" ? [`${item.event.phase}: ${item.event.line}`] : []));

function pythonBuilder(): FakeImageBuilder {
  const builder = new FakeImageBuilder({ anyBase: true });
  builder.python = hostPython;
  return builder;
}

describe("the import check before push", () => {
  it("fails a forgotten dependency with MISSING_DEPENDENCY naming file, line and module, and pushes nothing", async () => {
    const builder = pythonBuilder();
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "import os\n\nimport torchvision_m1l0_absent\n" }) });
    const failure = await runBuild(fixture.deps({ builder, importCheck }), id, config).catch((error: unknown) => error);
    expect(isBuilderError(failure) && failure.code).toBe("MISSING_DEPENDENCY");
    expect((failure as Error).message).toBe('main.py:3 imports "torchvision_m1l0_absent", which is not installed in the image; add it to requirements.txt');
    expect(builder.calls.map((call) => call.method)).toEqual(["build", "run"]);
    expect(builder.registry.images.size).toBe(0);
    expect(await statuses(id)).not.toContain("pushing");
    expect((await lines(id)).join("\n")).toMatch(/build: import check: failed, 1 missing module\(s\); 1 file\(s\), 2 import\(s\), python 3\.\d+(\.\d+)?; \d+ ms \(checker [\d.]+ ms\), on step \d+'s image alongside the label step; nothing is pushed/);
  });

  it("passes a guarded optional import with a note, and pushes", async () => {
    const builder = pythonBuilder();
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "try:\n    import ujson_m1l0_absent as json\nexcept ImportError:\n    import json\n" }) });
    await expect(runBuild(fixture.deps({ builder, importCheck }), id, config)).resolves.toMatchObject({ kind: "succeeded" });
    const log = (await lines(id)).join("\n");
    expect(log).toMatch(/import check: note: main\.py:2 imports "ujson_m1l0_absent" under a guard/);
    expect(log).toMatch(/import check: passed, 1 file\(s\)/);
    expect(builder.calls.map((call) => call.method)).toEqual(["build", "run", "push"]);
  });

  it("starts on the image of the step whose files are final, before the build has ended", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const seen: Array<{ image: string; buildEnded: boolean }> = [];
    builder.python = (request, files) => {
      seen.push({ image: request.image, buildEnded: builder.images.has(target) });
      return hostPython(request, files);
    };
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "import json\n" }) });
    const deps = fixture.deps({ builder, importCheck });
    const target = (await deps.registry[config.service]!.resolve(config)).reference;
    await expect(runBuild(deps, id, config)).resolves.toMatchObject({ kind: "succeeded" });
    expect(seen).toEqual([{ image: expect.stringMatching(/^sha256:/) as string, buildEnded: false }]);
    expect(seen[0]!.image).not.toBe(target);
    expect((await lines(id)).join("\n")).toMatch(/import check: passed, 1 file\(s\), 1 import\(s\), python [\d.]+; \d+ ms \(checker [\d.]+ ms\), on step \d+'s image alongside the label step/);
  });

  it("discards an early run on an image without the built image's layers, unread, and checks the built image", async () => {
    const builder = pythonBuilder();
    // a RUN step's output could name another image as if the builder had: here every step reports one with none of the project
    const foreign = "sha256:" + "f".repeat(64);
    builder.images.set(foreign, { id: foreign, origin: "built", contentId: "sha256:" + "e".repeat(64), labels: {} });
    builder.files.set(foreign, new Map([["main.py", Buffer.from("import foreign_secret_module_m1l0\n")]]));
    builder.reportStepImage = () => foreign;
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "import json\n" }) });
    const deps = fixture.deps({ builder, importCheck });
    const target = (await deps.registry[config.service]!.resolve(config)).reference;
    await expect(runBuild(deps, id, config)).resolves.toMatchObject({ kind: "succeeded" });
    expect(builder.calls.filter((call) => call.method === "run").map((call) => call.reference)).toEqual([foreign, target]);
    const log = (await lines(id)).join("\n");
    expect(log).not.toContain("foreign_secret_module_m1l0");
    expect(log).toMatch(/import check: passed, 1 file\(s\), 1 import\(s\), python [\d.]+; \d+ ms \(checker [\d.]+ ms\)$/m);
  });

  it("checks the built image of a user's own Dockerfile, once the build has ended", async () => {
    const builder = pythonBuilder();
    const { id, config } = await fixture.submit({ source: fixture.project({ "Dockerfile": "FROM python\nCOPY . /app\nLABEL a=b\n", "main.py": "import json\n" }), dockerfile: "Dockerfile" });
    const deps = fixture.deps({ builder, importCheck });
    const target = (await deps.registry[config.service]!.resolve(config)).reference;
    await expect(runBuild(deps, id, config)).resolves.toMatchObject({ kind: "succeeded" });
    expect(builder.calls.filter((call) => call.method === "run").map((call) => call.reference)).toEqual([target]);
  });

  it("skips an image without python3 with a note, and pushes", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const { id, config } = await fixture.submit({ source: fixture.project({ "Dockerfile": "FROM busybox\nCOPY . /app\n", "main.py": "import absent_m1l0\n" }), dockerfile: "Dockerfile" });
    await expect(runBuild(fixture.deps({ builder, importCheck }), id, config)).resolves.toMatchObject({ kind: "succeeded" });
    expect((await lines(id)).join("\n")).toMatch(/import check: skipped: the image has no python3/);
  });

  it("does not run when the deployment turned it off (IMPORT_CHECK=false)", async () => {
    const builder = pythonBuilder();
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "import absent_m1l0\n" }) });
    await expect(runBuild(fixture.deps({ builder }), id, config)).resolves.toMatchObject({ kind: "succeeded" });
    expect(builder.calls.map((call) => call.method)).toEqual(["build", "push"]);
  });
});

describe("IMPORT_CHECK, per deployment", () => {
  const depsOf = (env: NodeJS.ProcessEnv) =>
    createPipelineDeps(loadWorkerEnv(env), fixture.store, pino({ level: "silent" }), new FakeImageBuilder(), new FixedNetworkEgress("none"), {} as PendingUploads, NO_WEBHOOKS);

  it("is on by default with a 30 s deadline, off with IMPORT_CHECK=false, and a bad deadline names the variable", () => {
    expect(depsOf({}).importCheck).toEqual({ timeoutMs: 30_000 });
    expect(depsOf({ IMPORT_CHECK_TIMEOUT_SECONDS: "5" }).importCheck).toEqual({ timeoutMs: 5_000 });
    expect(depsOf({ IMPORT_CHECK: "false" }).importCheck).toBeUndefined();
    expect(() => loadWorkerEnv({ IMPORT_CHECK_TIMEOUT_SECONDS: "0" })).toThrow(/IMPORT_CHECK_TIMEOUT_SECONDS/);
  });
});
