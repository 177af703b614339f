import { createContextFilter, packContext } from "@m1l0/context";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DockerImageBuilder } from "../src/docker.js";

// The worker hands packContext's stream to dockerode, which pipes it into the daemon's /build
// request: that pipe is where packing reuses its buffers. Here it runs against the real daemon.
const BASE = process.env.BASE_IMAGE_BUSYBOX ?? "m1l0-local/busybox:latest";
const builder = new DockerImageBuilder({ socketPath: process.env.DOCKER_SOCKET ?? "/var/run/docker.sock" });
const root = mkdtempSync(path.join(tmpdir(), "m1l0-context-pipe-"));
const tag = `m1l0-test/context-pipe:${randomUUID().slice(0, 8)}`;

afterAll(async () => {
  rmSync(root, { recursive: true, force: true });
  await builder.docker.getImage(tag).remove({ force: true }).catch(() => undefined);
});

describe("the build context, piped into the daemon's request", () => {
  it("reaches the daemon byte for byte through a pool of at most 8 reused buffers", async () => {
    const big = randomBytes(24 * 1024 * 1024 + 777);
    writeFileSync(path.join(root, "big.bin"), big);
    writeFileSync(path.join(root, "Dockerfile"), `FROM ${BASE}\nCOPY big.bin /ctx/big.bin\nRUN sha256sum /ctx/big.bin\n`);
    const buffers = new Set<ArrayBufferLike>();
    let chunks = 0;
    const context = packContext(root, {
      filter: await createContextFilter(root, []),
      // a tap sees the very chunks the request is written
      tap: { write: (chunk) => void (chunks++, buffers.add(chunk.buffer)), end: () => undefined },
    });
    const lines: string[] = [];
    await builder.build({ context, tag, dockerfile: "Dockerfile", networkMode: "none", onLine: (line) => lines.push(line) });

    const expected = createHash("sha256").update(big).digest("hex");
    expect(lines.join("\n")).toContain(`${expected}  /ctx/big.bin`);
    expect(chunks).toBeGreaterThan(190); // 24 MiB in 128 KiB chunks
    expect(buffers.size).toBeLessThanOrEqual(8);
  });
});
