import { BuilderError, isBuilderError } from "@m1l0/config";
import { readdirSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { BUILD_KEY_LABEL } from "../src/build-key.js";
import { GENERATED_DOCKERFILE, runBuild } from "../src/pipeline.js";
import { FakeImageBuilder } from "./support/fake-builder.js";
import { pipelineFixture } from "./support/pipeline-fixture.js";

// runBuild's phases with fakes behind the builder and registry ports, the real store on Redis.
const fixture = pipelineFixture();
afterAll(() => fixture.close());

const statuses = async (id: string) => (await fixture.store.readEvents(id, "0", { count: 1000 })).flatMap((item) => (item.event.type === "status" ? [item.event.status] : []));
const lines = async (id: string) => (await fixture.store.readEvents(id, "0", { count: 1000 })).flatMap((item) => (item.event.type === "log" ? [`${item.event.phase}: ${item.event.line}`] : []));

describe("runBuild", () => {
  it("fetches, plans a generated Dockerfile, builds and pushes; the pipeline puts every label in the Dockerfile", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "print('hi')\n", "requirements.txt": "numpy\n" }) });
    const outcome = await runBuild(fixture.deps({ builder }), id, config);
    expect(outcome.kind).toBe("succeeded");
    expect(outcome.image).toMatchObject({ registry: "registry.test", repository: "m1l0/unit", tag: "v1", reference: "registry.test/m1l0/unit:v1" });
    expect(outcome.image.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    // finishBuild records the terminal state: runBuild leaves the build pushing
    expect(await statuses(id)).toEqual(["queued", "fetching", "building", "pushing"]);
    const build = builder.calls.find((call) => call.method === "build");
    expect(build?.labels).toBeUndefined();
    const image = builder.images.get("registry.test/m1l0/unit:v1");
    expect(image?.labels["ai.m1l0.image-cache"]).toBe("unit");
    expect(image?.labels["ai.m1l0.build-id"]).toBe(id);
    expect(image?.labels["org.opencontainers.image.version"]).toBe("v1");
    expect(builder.registry.images.get("registry.test/m1l0/unit:v1")?.digest).toBe(outcome.image.digest);
    const log = await lines(id);
    expect(log).toContain(`build: built image ${image?.id} tagged registry.test/m1l0/unit:v1`);
    expect(log.at(-1)).toBe(`push: pushed registry.test/m1l0/unit:v1@${outcome.image.digest}`);
    expect((await fixture.store.require(id)).baseImage).toBeTruthy();
  });

  it("builds the user's own Dockerfile with the labels given through the build API", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const { id, config } = await fixture.submit({ source: fixture.project({ "Dockerfile": "FROM python:3.11\nCOPY . /app\n", "main.py": "" }), dockerfile: "Dockerfile" });
    await expect(runBuild(fixture.deps({ builder }), id, config)).resolves.toMatchObject({ kind: "succeeded" });
    const build = builder.calls.find((call) => call.method === "build");
    expect(build?.labels).toEqual({ "ai.m1l0.image-cache": "unit" });
    expect(build?.labels?.[BUILD_KEY_LABEL]).toBeUndefined(); // a dir source has no identity, so no build key
  });

  it("fails a missing entry with ENTRY_NOT_FOUND before building, and leaves no work dir", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const { id, config } = await fixture.submit({ source: fixture.project({ "app.py": "" }), entry: "main.py" });
    const failure = await runBuild(fixture.deps({ builder }), id, config).catch((error: unknown) => error);
    expect(isBuilderError(failure) && failure.code).toBe("ENTRY_NOT_FOUND");
    expect(builder.calls).toEqual([]);
    expect(readdirSync(fixture.dir).filter((name) => name.startsWith(`m1l0-${id}-`))).toEqual([]);
    expect(await statuses(id)).toEqual(["queued", "fetching"]);
  });

  it("builds with cache from the repository's last pushed image, pulled onto this daemon", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    const source = fixture.project({ "main.py": "print(1)\n" });
    const last = new Map<string, string>();
    const lastImages = { get: async (registry: string, repository: string) => last.get(`${registry}/${repository}`), set: async (registry: string, repository: string, reference: string) => void last.set(`${registry}/${repository}`, reference) };
    const first = await fixture.submit({ source, revision: "v1" });
    await runBuild(fixture.deps({ builder, lastImages }), first.id, first.config);
    expect(last.get("registry.test/m1l0/unit")).toBe("registry.test/m1l0/unit:v1");
    // another worker (another daemon, the same registry) builds the next revision
    const other = new FakeImageBuilder({ anyBase: true, registry: builder.registry });
    const second = await fixture.submit({ source, revision: "v2" });
    // the pull overlaps the fetch: it starts before the build leaves `fetching`, not in the build phase
    const statusAtPull: string[] = [];
    const pull = other.pull.bind(other);
    other.pull = async (request) => {
      statusAtPull.push((await fixture.store.require(second.id)).status);
      return pull(request);
    };
    await runBuild(fixture.deps({ builder: other, lastImages }), second.id, second.config);
    expect(statusAtPull).toEqual(["fetching"]);
    expect(other.calls.map((call) => call.method)).toEqual(["pull", "build", "push"]);
    expect(other.calls.find((call) => call.method === "build")?.cacheFrom).toEqual(["registry.test/m1l0/unit:v1"]);
    expect(await lines(second.id)).toContain("build: cache from registry.test/m1l0/unit:v1");
  });

  it("passes the builder's failure on, with the build's status where it failed", async () => {
    const builder = new FakeImageBuilder({ anyBase: true });
    builder.failNextPush = new BuilderError("REGISTRY_UNREACHABLE", "registry down");
    const { id, config } = await fixture.submit({ source: fixture.project({ "main.py": "" }) });
    await expect(runBuild(fixture.deps({ builder }), id, config)).rejects.toThrow("registry down");
    expect((await fixture.store.require(id)).status).toBe("pushing");
  });

  it("names its generated Dockerfile so that it cannot clash with the user's", () => {
    expect(GENERATED_DOCKERFILE).toBe(".m1l0.Dockerfile");
  });
});
