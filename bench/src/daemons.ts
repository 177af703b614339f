import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

/** The default daemon plus the fleet daemons started by `scripts/fleet.sh up 3`. */
export const DAEMON_SOCKETS = ["/var/run/docker.sock", "/var/run/docker-w2.sock", "/var/run/docker-w3.sock"] as const;

export const daemonLabel = (socket: string) => (socket === DAEMON_SOCKETS[0] ? "default" : socket.replace(/^\/var\/run\/docker-(w\d+)\.sock$/, "$1"));

/**
 * Fails unless every socket answers and holds the same base images as the default daemon
 * (scripts/fleet.sh copies them): layers can only be shared across daemons on identical bases.
 */
export async function checkDaemons(sockets: readonly string[], baseImages: readonly string[]): Promise<void> {
  const missing = sockets.filter((socket) => !existsSync(socket));
  if (missing.length) throw new Error(`daemons missing (${missing.join(", ")}): run \`bash scripts/fleet.sh up 3\` (scripts/bench.sh does)`);
  for (const image of baseImages) {
    const ids = await Promise.all(sockets.map(async (socket) => (await new Docker({ socketPath: socket }).getImage(image).inspect()).Id));
    if (new Set(ids).size > 1) throw new Error(`${image} differs between the daemons (${ids.join(", ")}): run \`bash scripts/fleet.sh up 3\``);
  }
}

/** Removes every image of `registry/repository` (any tag) from a daemon, with its untagged parents. */
export async function removeRepositoryImages(socket: string, repositoryReference: string): Promise<void> {
  const docker = new Docker({ socketPath: socket });
  const images = await docker.listImages({ filters: JSON.stringify({ reference: [repositoryReference] }) });
  for (const image of images) await docker.getImage(image.Id).remove({ force: true }).catch(() => undefined);
}

/** Address of the default daemon's bridge on this host, reachable from build containers of every daemon here. */
export async function bridgeGateway(): Promise<string> {
  const network = (await new Docker({ socketPath: DAEMON_SOCKETS[0] }).getNetwork("bridge").inspect()) as { IPAM?: { Config?: Array<{ Gateway?: string }> }; Options?: Record<string, string> };
  const fromIpam = network.IPAM?.Config?.find((config) => config.Gateway)?.Gateway;
  if (fromIpam) return fromIpam;
  // the daemon does not always name the default bridge's gateway in IPAM; its interface has the address
  const bridge = network.Options?.["com.docker.network.bridge.name"] ?? "docker0";
  const gateway = /\binet (\d+\.\d+\.\d+\.\d+)\//.exec(execFileSync("ip", ["-4", "-o", "addr", "show", "dev", bridge]).toString())?.[1];
  if (!gateway) throw new Error(`the default daemon's bridge network (${bridge}) has no gateway address`);
  return gateway;
}

export interface TimedPull {
  ms: number;
  /** layers the daemon downloaded ("Pull complete") and those it already held ("Already exists") */
  downloaded: number;
  present: number;
}

/** `docker pull` through the daemon's API (as the worker pulls), timed from the request to the end of its progress stream. */
export async function timedPull(socket: string, reference: string, auth: { username: string; password: string; serveraddress: string }): Promise<TimedPull> {
  const docker = new Docker({ socketPath: socket });
  const started = performance.now();
  const stream = await docker.pull(reference, { authconfig: auth });
  const events = await new Promise<Array<{ status?: string; error?: string }>>((resolve, reject) => docker.modem.followProgress(stream, (error, output) => (error ? reject(error) : resolve(output as Array<{ status?: string; error?: string }>))));
  const ms = performance.now() - started;
  const failure = events.find((event) => event.error);
  if (failure) throw new Error(`pull of ${reference} failed: ${failure.error}`);
  return { ms, downloaded: events.filter((event) => event.status === "Pull complete").length, present: events.filter((event) => event.status === "Already exists").length };
}
