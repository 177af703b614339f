/**
 * The fleet benchmark's floor on this machine: the same builds done by the docker CLI alone —
 * `git clone --depth 1`, `docker build` (classic builder, network none), `docker push` — with
 * the same number of builds at a time per daemon. Its speed-up from 1 daemon to 3 is what the
 * machine's cores allow; ours cannot exceed it by more than noise.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { removeRepositoryImages } from "./daemons.js";
import type { Services } from "./stack.js";
import { createGitFixture, runCommand, shortId } from "./util.js";

export interface CliBatchOptions {
  builds: number;
  sleepSeconds: number;
  /** builds at a time per daemon */
  concurrency: number;
  baseImage: string;
}

/** Runs `builds` CLI builds over `sockets` (`concurrency` slots each) and returns the wall time from the first start to the last push. */
export async function runCliBatch(services: Services, sockets: readonly string[], options: CliBatchOptions, emptyDir: string): Promise<number> {
  const salt = shortId();
  const repository = `${services.registryHost}/m1l0bench/fleet-cli-${salt}`;
  const fixtures = Array.from({ length: options.builds }, (_, index) =>
    createGitFixture(emptyDir, { Dockerfile: `FROM ${options.baseImage}\nRUN echo cli-${salt}-${index} && sleep ${options.sleepSeconds}\n` }),
  );
  const configDir = mkdtempSync(path.join(tmpdir(), "m1l0-bench-fleet-cli-"));
  try {
    // a private DOCKER_CONFIG keeps the login out of the machine's ~/.docker (shared with others)
    await runCommand("docker", ["login", "-u", services.registryUsername, "--password-stdin", services.registryHost], { env: { ...process.env, DOCKER_CONFIG: configDir }, input: services.registryPassword });
    let next = 0;
    const slot = async (socket: string) => {
      const env = { ...process.env, DOCKER_BUILDKIT: "0", DOCKER_CONFIG: configDir, DOCKER_HOST: `unix://${socket}` };
      for (let index = next++; index < fixtures.length; index = next++) {
        const fixture = fixtures[index]!;
        const checkout = path.join(configDir, `b${index}`);
        const reference = `${repository}:b${index}`;
        await runCommand("git", ["clone", "-q", "--depth", "1", fixture.url, checkout]);
        await runCommand("docker", ["build", "-q", "--network", "none", "-t", reference, checkout], { env });
        await runCommand("docker", ["push", "-q", reference], { env });
      }
    };
    const started = performance.now();
    await Promise.all(sockets.flatMap((socket) => Array.from({ length: options.concurrency }, () => slot(socket))));
    return performance.now() - started;
  } finally {
    for (const fixture of fixtures) fixture.cleanup();
    rmSync(configDir, { recursive: true, force: true });
    for (const socket of sockets) await removeRepositoryImages(socket, repository);
  }
}
