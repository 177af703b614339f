import { ROOT_DIR } from "@m1l0/e2e";
import path from "node:path";
import { run } from "./run.js";

const SWARM_SCRIPT = path.join(ROOT_DIR, "scripts/swarm.sh");
export const SUBNET_PREFIX = process.env.SWARM_SUBNET_PREFIX ?? "10.213.0";

/** scripts/swarm.sh, which makes and removes the node containers. */
export function swarmScript(args: readonly string[], timeoutMs = 600_000): Promise<string> {
  return run("bash", [SWARM_SCRIPT, ...args], { timeoutMs });
}

/** One swarm node: a container with its own dockerd, driven through `docker exec NAME docker …`. */
export class SwarmNode {
  constructor(
    readonly name: string,
    readonly ip: string,
  ) {}

  static async start(index: number): Promise<SwarmNode> {
    const name = `m1l0-swarm-${index}`;
    const ip = (await swarmScript(["node", name, String(index)], 120_000)).trim().split("\n").at(-1)!;
    return new SwarmNode(name, ip);
  }

  /** the node's own docker CLI (20.10) against the node's own daemon */
  docker(args: readonly string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number } = {}): Promise<string> {
    const envArgs = Object.entries(options.env ?? {}).flatMap(([key, value]) => ["-e", `${key}=${value}`]);
    return run("docker", ["exec", "-i", ...envArgs, this.name, "docker", ...args], { ...(options.input !== undefined ? { input: options.input } : {}), timeoutMs: options.timeoutMs ?? 120_000 });
  }

  /** writes a file inside the node's filesystem */
  async writeFile(file: string, text: string): Promise<void> {
    await run("docker", ["exec", "-i", this.name, "sh", "-c", `mkdir -p "$(dirname "$1")" && cat > "$1"`, "sh", file], { input: text });
  }

  load(images: readonly string[]): Promise<string> {
    return swarmScript(["load", this.name, ...images], 600_000);
  }

  /** repository:tag of every image on the node's daemon */
  async images(): Promise<string[]> {
    return (await this.docker(["images", "--format", "{{.Repository}}:{{.Tag}}"])).split("\n").filter(Boolean);
  }

  /** ids of the running containers of a stack's service on this node */
  async serviceContainers(service: string): Promise<string[]> {
    return (await this.docker(["ps", "-q", "--filter", `label=com.docker.swarm.service.name=${service}`])).split("\n").filter(Boolean);
  }
}
