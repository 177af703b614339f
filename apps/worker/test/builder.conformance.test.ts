import { isBuilderError } from "@m1l0/config";
import { tarOf } from "@m1l0/testkit";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ImageBuilder } from "../src/builder.js";
import { DockerImageBuilder } from "../src/docker.js";
import { FakeImageBuilder } from "./support/fake-builder.js";

// One suite, two adapters (bullmq's adapter-conformance tests are the model): the real
// builder against the real daemon and registry, and the fake the pipeline's unit tests use.
// Whatever the fake does here, the real one does too, so unit tests on the fake mean something.
const BASE = process.env.BASE_IMAGE_BUSYBOX ?? "m1l0-local/busybox:latest";
const REGISTRY = process.env.REGISTRY_HOST ?? "127.0.0.1:5000";
const auth = { username: process.env.REGISTRY_USERNAME ?? "m1l0", password: process.env.REGISTRY_PASSWORD ?? "m1l0-local-registry-pw", serveraddress: REGISTRY };

interface Adapter {
  builder: ImageBuilder;
  /** drops a tag from the daemon (not part of the port: the image cache does it for real) */
  forget(reference: string): Promise<void>;
  /** containers (running or not) of `image` on the daemon: runs must leave none */
  containersOf(image: string): Promise<number>;
  cleanup(): Promise<void>;
}

function realAdapter(): Adapter {
  const builder = new DockerImageBuilder({ socketPath: process.env.DOCKER_SOCKET ?? "/var/run/docker.sock" });
  const tags = new Set<string>();
  const forget = (reference: string) => builder.docker.getImage(reference).remove({ force: true }).then(() => undefined, () => undefined);
  const tracked: ImageBuilder = {
    ping: () => builder.ping(),
    inspect: (reference) => builder.inspect(reference),
    contentId: (reference) => builder.contentId(reference),
    push: (request) => builder.push(request),
    pull: (request) => (tags.add(request.reference), builder.pull(request)),
    build: (request) => (tags.add(request.tag), builder.build(request)),
    run: (request) => builder.run(request),
  };
  const containersOf = async (image: string) => (await builder.docker.listContainers({ all: true, filters: { ancestor: [image] } })).length;
  return { builder: tracked, forget, containersOf, cleanup: async () => void (await Promise.all([...tags].map(forget))) };
}

function fakeAdapter(): Adapter {
  const builder = new FakeImageBuilder({ baseImages: [BASE] });
  // the fake keeps no containers: a run leaves nothing behind by construction
  return { builder, forget: async (reference) => void builder.images.delete(reference), containersOf: async () => 0, cleanup: async () => undefined };
}

const noop = () => undefined;

function conformance(name: string, makeAdapter: () => Adapter) {
  describe(`image builder conformance: ${name}`, () => {
    const adapter = makeAdapter();
    const { builder } = adapter;
    const run = randomUUID().slice(0, 8);
    const tag = (label: string) => `${REGISTRY}/m1l0-test/conformance:${run}-${label}`;
    const build = (reference: string, dockerfile: string, lines: string[] = []) =>
      builder.build({ context: tarOf({ Dockerfile: dockerfile, "app.txt": `conformance ${run}\n` }), tag: reference, dockerfile: "Dockerfile", networkMode: "none", onLine: (line) => lines.push(line) });
    afterAll(() => adapter.cleanup());

    it("answers a ping", async () => {
      await expect(builder.ping()).resolves.toBeUndefined();
    });

    it("knows no image under an unknown reference", async () => {
      await expect(builder.inspect(tag("never-built"))).resolves.toBeUndefined();
    });

    it("holds the base image as pulled, with a content id (also alone, from contentId)", async () => {
      const base = await builder.inspect(BASE);
      expect(base?.origin).toBe("pulled");
      expect(base?.contentId).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(await builder.contentId(BASE)).toBe(base?.contentId);
      expect(await builder.contentId(tag("never-built"))).toBeUndefined();
    });

    it("builds step by step, and the image is `built` here", async () => {
      const lines: string[] = [];
      const reference = tag("built");
      const { imageId } = await build(reference, `FROM ${BASE}\nCOPY app.txt /app.txt\nLABEL run=${run}\n`, lines);
      expect(imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(lines.some((line) => /^Step 1\/3 : FROM /.test(line))).toBe(true);
      const image = await builder.inspect(reference);
      expect(image?.origin).toBe("built");
      expect(image?.contentId).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(image?.contentId).not.toBe((await builder.inspect(BASE))?.contentId);
    });

    it("reports each step's image; one followed only by metadata steps has the built image's layers, and runs", async () => {
      const reference = tag("steps");
      const steps: Array<[number, string]> = [];
      // the RUN step prints what looks like the builder's own line: the step's image is still its own
      await builder.build({
        context: tarOf({ Dockerfile: `FROM ${BASE}\nRUN echo " ---> 0123456789ab"\nCOPY app.txt /app.txt\nLABEL run=${run}-steps\n`, "app.txt": `conformance ${run}\n` }),
        tag: reference, dockerfile: "Dockerfile", networkMode: "none", onLine: noop,
        onStepImage: (step, imageId) => steps.push([step, imageId]),
      });
      expect(steps.map(([step]) => step)).toEqual([1, 2, 3, 4]);
      expect(steps.map(([, imageId]) => imageId)).not.toContain("0123456789ab");
      const [copied, labelled] = [steps[2]![1], steps[3]![1]];
      const built = await builder.inspect(reference);
      expect((await builder.inspect(copied))?.contentId).toBe(built?.contentId);
      expect((await builder.inspect(labelled))?.contentId).toBe(built?.contentId);
      expect((await builder.inspect(steps[1]![1]))?.contentId).not.toBe(built?.contentId);
      expect(await builder.run({ image: copied, command: ["sh", "-c", "exit 0"], timeoutMs: 60_000 })).toMatchObject({ exitCode: 0, timedOut: false });
    });

    it("builds the same context to the same content", async () => {
      const dockerfile = `FROM ${BASE}\nCOPY app.txt /app.txt\n`;
      await build(tag("same-a"), dockerfile);
      await build(tag("same-b"), dockerfile);
      expect((await builder.inspect(tag("same-a")))?.contentId).toBe((await builder.inspect(tag("same-b")))?.contentId);
    });

    it("fails a RUN step that exits non-zero with BUILD_FAILED", async () => {
      const failure = await build(tag("run-fails"), `FROM ${BASE}\nRUN exit 3\n`).catch((error: unknown) => error);
      expect(isBuilderError(failure) && failure.code).toBe("BUILD_FAILED");
      expect((failure as Error).message).toMatch(/returned a non-zero code: 3/);
    });

    it("fails an unknown instruction with DOCKERFILE_ERROR", async () => {
      const failure = await build(tag("bad-dockerfile"), `FROM ${BASE}\nFROBNICATE now\n`).catch((error: unknown) => error);
      expect(isBuilderError(failure) && failure.code).toBe("DOCKERFILE_ERROR");
    });

    it("fails a base image it cannot get with BASE_IMAGE_UNAVAILABLE", async () => {
      const failure = await build(tag("no-base"), "FROM 127.0.0.1:1/m1l0-test/absent:1\nRUN true\n").catch((error: unknown) => error);
      expect(isBuilderError(failure) && failure.code).toBe("BASE_IMAGE_UNAVAILABLE");
    });

    it("refuses to push a tag it does not hold", async () => {
      const failure = await builder.push({ reference: tag("not-here"), registry: REGISTRY, auth, onLine: noop }).catch((error: unknown) => error);
      expect(isBuilderError(failure)).toBe(true);
    });

    it("pushes, and pulls back an image that is then `pulled`, with the same content", async () => {
      const reference = tag("pushed");
      await build(reference, `FROM ${BASE}\nCOPY app.txt /pushed.txt\n`);
      const built = await builder.inspect(reference);
      const { digest } = await builder.push({ reference, registry: REGISTRY, auth, onLine: noop });
      expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      await adapter.forget(reference);
      expect(await builder.inspect(reference)).toBeUndefined();
      await builder.pull({ reference, auth });
      const pulled = await builder.inspect(reference);
      expect(pulled?.origin).toBe("pulled");
      expect(pulled?.contentId).toBe(built?.contentId);
    });

    it("counts an image whose steps were restored from a pulled cachefrom image as `pulled`: a build without cachefrom would run them again", async () => {
      const pushed = tag("restore-source");
      const dockerfile = `FROM ${BASE}\nRUN echo ${run} > /dependency\nCOPY app.txt /app.txt\n`;
      const context = (text: string) => tarOf({ Dockerfile: dockerfile, "app.txt": text });
      await builder.build({ context: context("v1"), tag: pushed, dockerfile: "Dockerfile", networkMode: "none", onLine: noop });
      await builder.push({ reference: pushed, registry: REGISTRY, auth, onLine: noop });
      await adapter.forget(pushed); // with its untagged step images: nothing of it is left in the build cache
      await builder.pull({ reference: pushed, auth });
      const lines: string[] = [];
      const rebuilt = tag("restored");
      await builder.build({ context: context("v2"), tag: rebuilt, dockerfile: "Dockerfile", networkMode: "none", cacheFrom: [pushed], onLine: (line) => lines.push(line) });
      expect((await builder.inspect(rebuilt))?.origin).toBe("pulled");
      // and one built without cachefrom on plain local steps stays `built`
      await builder.build({ context: context("v3"), tag: tag("plain"), dockerfile: "Dockerfile", networkMode: "none", onLine: noop });
      expect((await builder.inspect(tag("plain")))?.origin).toBe("built");
    });

    it("fails a pull of an image the registry does not have", async () => {
      await expect(builder.pull({ reference: tag("never-pushed"), auth })).rejects.toThrow(/pull of .* failed/);
    });

    describe("run: one sandboxed program in an image it holds", () => {
      const image = tag("runs");
      const sh = (script: string, extra: { timeoutMs?: number; env?: Record<string, string> } = {}) =>
        builder.run({ image, command: ["sh", "-c", script], timeoutMs: extra.timeoutMs ?? 60_000, ...(extra.env ? { env: extra.env } : {}) });
      beforeAll(() => build(image, `FROM ${BASE}\nLABEL run=${run}-runs\n`));

      it("returns the exit status, stdout and stderr apart, with the env it was given, and leaves no container", async () => {
        const result = await sh("echo out $GREETING; echo err >&2; exit 3", { env: { GREETING: "hello" } });
        expect(result).toEqual({ exitCode: 3, stdout: "out hello\n", stderr: "err\n", timedOut: false });
        expect(await adapter.containersOf(image)).toBe(0);
      });

      it("has no network: the loopback interface only", async () => {
        const result = await sh("ls /sys/class/net");
        expect(result.stdout.split(/\s+/).filter(Boolean)).toEqual(["lo"]);
      });

      it("has a read-only root filesystem and a writable /tmp", async () => {
        const result = await sh("touch /tmp/probe; echo tmp-ok; touch /probe");
        expect(result.stdout).toBe("tmp-ok\n");
        expect(result.stderr).toMatch(/Read-only file system/);
        expect(result.exitCode).toBe(1);
      });

      it("kills a run at its deadline and removes its container", async () => {
        const started = Date.now();
        const result = await sh("sleep 120", { timeoutMs: 1_500 });
        expect(result.timedOut).toBe(true);
        expect(Date.now() - started).toBeLessThan(60_000);
        expect(await adapter.containersOf(image)).toBe(0);
      });

      it("stops a run when its signal aborts (a cancelled build) and removes its container", async () => {
        const controller = new AbortController();
        const running = builder.run({ image, command: ["sh", "-c", "sleep 120"], timeoutMs: 60_000, signal: controller.signal });
        setTimeout(() => controller.abort(new Error("cancelled by the test")), 500);
        await expect(running).rejects.toThrow("cancelled by the test");
        expect(await adapter.containersOf(image)).toBe(0);
      });

      it("answers 127 for a program the image does not have", async () => {
        const result = await builder.run({ image, command: ["python3", "-c", "print(1)"], timeoutMs: 60_000 });
        expect(result.exitCode).toBe(127);
        expect(result.timedOut).toBe(false);
        expect(await adapter.containersOf(image)).toBe(0);
      });

      it("refuses an image it does not hold", async () => {
        await expect(builder.run({ image: tag("never-built-run"), command: ["sh", "-c", "true"], timeoutMs: 60_000 })).rejects.toThrow();
      });
    });
  });
}

conformance("DockerImageBuilder (real daemon and registry)", realAdapter);
conformance("FakeImageBuilder", fakeAdapter);
