import Docker from "dockerode";
import { execFileSync } from "node:child_process";

const docker = new Docker({ socketPath: "/var/run/docker.sock" });

/** The Linux bridge of a Docker network. */
export async function bridgeOf(name: string): Promise<string> {
  const info = (await docker.getNetwork(name).inspect()) as { Id: string; Options?: Record<string, string> };
  return info.Options?.["com.docker.network.bridge.name"] || `br-${info.Id.slice(0, 12)}`;
}

/** The host's address on a network's bridge (IPAM does not always name the default bridge's gateway; the interface always has it). */
export async function gatewayOf(name: string): Promise<string> {
  const bridge = await bridgeOf(name);
  const gateway = /\binet (\d+\.\d+\.\d+\.\d+)\//.exec(execFileSync("ip", ["-4", "-o", "addr", "show", "dev", bridge]).toString())?.[1];
  if (!gateway) throw new Error(`network ${name} (bridge ${bridge}) has no IPv4 address on this host`);
  return gateway;
}
