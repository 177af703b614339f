import Docker from "dockerode";
import type { Redis } from "ioredis";
import { services } from "@m1l0/testkit";

const DEFAULT_SOCKET = "/var/run/docker.sock";

/** Pulls `reference` from the local registry with its test credentials (proves the image came from the registry). */
export async function pullFromRegistry(reference: string, socketPath = DEFAULT_SOCKET): Promise<void> {
  const docker = new Docker({ socketPath });
  const authconfig = { username: services.registryUsername, password: services.registryPassword, serveraddress: services.registryHost };
  const stream = await docker.pull(reference, { authconfig });
  await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (error) => (error ? reject(error) : resolve())));
}

/** Runs an image once with no network (its own entry, or `entrypoint`) and returns what it printed; the container is removed. */
export async function runImage(reference: string, options: { entrypoint?: string[]; socketPath?: string } = {}): Promise<string> {
  const docker = new Docker({ socketPath: options.socketPath ?? DEFAULT_SOCKET });
  const container = await docker.createContainer({ Image: reference, ...(options.entrypoint ? { Entrypoint: options.entrypoint } : {}), Tty: true, HostConfig: { NetworkMode: "none" } });
  try {
    await container.start();
    await container.wait();
    return (await container.logs({ stdout: true, stderr: true })).toString("utf8");
  } finally {
    await container.remove({ force: true });
  }
}

/**
 * The history entry of the step that made a layer: when it was created and by what. A reused
 * layer keeps both; the local image Id does not identify it (a daemon may hold several
 * equivalent images, e.g. one restored from a pulled image through cache-from).
 */
export async function layerOf(reference: string, createdBy: RegExp, socketPath = DEFAULT_SOCKET): Promise<string | undefined> {
  const history = (await new Docker({ socketPath }).getImage(reference).history()) as Array<{ Created: number; CreatedBy: string }>;
  const entry = history.find((item) => createdBy.test(item.CreatedBy));
  return entry ? `${entry.Created} ${entry.CreatedBy}` : undefined;
}

/** The manifest digest the shared registry serves for a tag (what a puller gets), or null when it has none. */
export async function registryDigest(repository: string, tag: string): Promise<string | null> {
  const response = await fetch(`http://${services.registryHost}/v2/${repository}/manifests/${tag}`, {
    method: "HEAD",
    headers: {
      authorization: `Basic ${Buffer.from(`${services.registryUsername}:${services.registryPassword}`).toString("base64")}`,
      accept: "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
    },
  });
  if (response.status !== 404 && !response.ok) throw new Error(`registry answered ${response.status}`);
  return response.ok ? response.headers.get("docker-content-digest") : null;
}

/** Every key matching `pattern`, through SCAN (never KEYS on a shared Redis). */
export async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== "0");
  return keys;
}
