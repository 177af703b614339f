import { ROOT_DIR } from "@m1l0/e2e";
import path from "node:path";
import { run } from "./run.js";

/** The images scripts/service-images.sh builds (the names scripts/lib.sh exports). */
export const images = {
  api: process.env.M1L0_API_IMAGE ?? "m1l0-local/api:dev",
  worker: process.env.M1L0_WORKER_IMAGE ?? "m1l0-local/worker:dev",
  standIns: process.env.M1L0_STANDIN_IMAGE ?? "m1l0-local/stand-ins:dev",
  busybox: process.env.BASE_IMAGE_BUSYBOX ?? "m1l0-local/busybox:latest",
  python: process.env.BASE_IMAGE_PYTHON ?? "m1l0-local/python:3.11-bookworm",
};

/** Fails with the command to run when an image the deployment tests need is missing. */
export async function requireImages(names: readonly string[]): Promise<void> {
  const missing: string[] = [];
  for (const name of names) await run("docker", ["image", "inspect", name]).catch(() => missing.push(name));
  if (missing.length) throw new Error(`missing images ${missing.join(", ")}: run bash scripts/service-images.sh (scripts/test.sh does)`);
}

/** docker-compose (Debian's 1.29) on the repository's compose files under one project name. */
export class Compose {
  readonly files: string[];

  constructor(
    readonly project: string,
    readonly env: Record<string, string>,
    files = ["docker-compose.yml", "docker-compose.local.yml"],
  ) {
    this.files = files.map((file) => path.join(ROOT_DIR, file));
  }

  run(args: readonly string[], timeoutMs = 180_000): Promise<string> {
    const fileArgs = this.files.flatMap((file) => ["-f", file]);
    return run("docker-compose", ["-p", this.project, ...fileArgs, ...args], { env: { ...process.env, ...this.env }, timeoutMs, cwd: ROOT_DIR });
  }

  /** Container ids of one service (all states). */
  async containers(service: string): Promise<string[]> {
    return (await this.run(["ps", "-a", "-q", service])).split("\n").filter(Boolean);
  }

  /** Everything Docker still holds for the project: containers, volumes, networks (by compose's label). */
  async leftovers(): Promise<string[]> {
    const label = `label=com.docker.compose.project=${this.project}`;
    const [containers, volumes, networks] = await Promise.all([
      run("docker", ["ps", "-a", "-q", "--filter", label]),
      run("docker", ["volume", "ls", "-q", "--filter", label]),
      run("docker", ["network", "ls", "-q", "--filter", label]),
    ]);
    return [
      ...containers.split("\n").filter(Boolean).map((id) => `container ${id}`),
      ...volumes.split("\n").filter(Boolean).map((id) => `volume ${id}`),
      ...networks.split("\n").filter(Boolean).map((id) => `network ${id}`),
    ];
  }
}

/** `docker inspect` State of a container. */
export async function containerState(id: string): Promise<{ Status: string; ExitCode: number; Health?: { Status: string } }> {
  return JSON.parse(await run("docker", ["inspect", "-f", "{{json .State}}", id])) as { Status: string; ExitCode: number; Health?: { Status: string } };
}
