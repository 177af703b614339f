import type Docker from "dockerode";
import { randomUUID } from "node:crypto";
import { pino } from "pino";
import { tarOf } from "@m1l0/testkit";
import { afterAll, describe, expect, it } from "vitest";
import { IMAGE_CACHE_LABEL, ImageCache, imageCacheLabels, withImageCache } from "../src/cleanup.js";
import { DockerImageBuilder } from "../src/docker.js";

// Against the real daemon: the cache keeps the newest N of its own images and never a base image.
const BASE = process.env.BASE_IMAGE_BUSYBOX ?? "m1l0-local/busybox:latest";
const scope = `test-${randomUUID()}`;
const docker = new DockerImageBuilder({ socketPath: process.env.DOCKER_SOCKET ?? "/var/run/docker.sock" });
const cache = new ImageCache(docker.docker, { scope, maxImages: 2, maxBytes: 10 * 1024 ** 3, danglingMinAgeSeconds: 0 }, pino({ level: "silent" }));
const builder = withImageCache(docker, cache);
const noop = () => undefined;

/** A one-file tar holding a Dockerfile. */
const contextOf = (dockerfile: string) => tarOf({ Dockerfile: dockerfile });

const listOurs = async () => docker.docker.listImages({ filters: JSON.stringify({ label: [`${IMAGE_CACHE_LABEL}=${scope}`] }) } as Docker.ListImagesOptions);

afterAll(async () => {
  for (const image of await listOurs()) await docker.docker.getImage(image.Id).remove({ force: true }).catch(() => undefined);
});

describe("image cache", () => {
  it("keeps the 2 most recently built of its 4 images, removes the rest, leaves the base image", async () => {
    const tags: string[] = [];
    for (let index = 0; index < 4; index++) {
      const tag = `127.0.0.1:1/m1l0-test/image-cache:${scope}-${index}`;
      await builder.build({ context: contextOf(`FROM ${BASE}\nLABEL n=${scope}-${index}\n`), tag, dockerfile: "Dockerfile", networkMode: "none", labels: imageCacheLabels(scope), onLine: noop });
      tags.push(tag);
    }
    expect(await listOurs()).toHaveLength(4);
    // between its build and the end of its push an image is in use: never collected
    expect((await cache.collect()).removed).toEqual([]);
    // the pushes end (here: fail at once, nothing listens on port 1)
    for (const tag of tags) await builder.push({ reference: tag, registry: "127.0.0.1:1", onLine: noop }).catch(noop);
    const result = await cache.collect();
    expect(result.removed).toHaveLength(2);
    const left = (await listOurs()).flatMap((image) => image.RepoTags ?? []).sort();
    expect(left).toEqual([tags[2], tags[3]].sort());
    await expect(docker.docker.getImage(BASE).inspect()).resolves.toBeTruthy();
  });

  it("after a job, asks the daemon only when this worker built, pulled or pushed since the last collection", async () => {
    const quietScope = `test-${randomUUID()}`;
    const quiet = new ImageCache(docker.docker, { scope: quietScope, maxImages: 2, maxBytes: 10 * 1024 ** 3, danglingMinAgeSeconds: 3600 }, pino({ level: "silent" }));
    const quietBuilder = withImageCache(docker, quiet);
    const collected = async () => {
      const run = quiet.collectIfChanged();
      if (run) await run;
      return run !== undefined;
    };
    expect(await collected()).toBe(true); // never collected yet (a worker's start)
    expect(await collected()).toBe(false); // a job that never reached the daemon (a bad source, a cached answer)
    await quietBuilder.pull({ reference: "127.0.0.1:1/m1l0-test/absent:x" }).catch(noop); // fails: still noted
    expect(await collected()).toBe(true);
    expect(await collected()).toBe(false);
    const tag = `127.0.0.1:1/m1l0-test/image-cache:${quietScope}`;
    await quietBuilder.build({ context: contextOf(`FROM ${BASE}\nLABEL n=${quietScope}\n`), tag, dockerfile: "Dockerfile", networkMode: "none", labels: imageCacheLabels(quietScope), onLine: noop });
    expect(await collected()).toBe(true);
    await quietBuilder.push({ reference: tag, registry: "127.0.0.1:1", onLine: noop }).catch(noop);
    expect(await collected()).toBe(true);
    expect(await collected()).toBe(false);
    await docker.docker.getImage(tag).remove({ force: true });
  });
});
