import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's root (this file is packages/testkit/{src,dist}/services.*). */
export const ROOT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** Addresses of the real services started by scripts/services.sh (same defaults as scripts/lib.sh). */
export interface Services {
  redisUrl: string;
  registryHost: string;
  registryUsername: string;
  registryPassword: string;
  gitServerUrl: string;
  gitFixturesDir: string;
  gitPrivateUsername: string;
  gitPrivateToken: string;
  s3Endpoint: string;
  s3Bucket: string;
  baseImageBusybox: string;
  cacheDir: string;
}

/** The only place the test kit reads the environment. */
export function loadServices(source: NodeJS.ProcessEnv = process.env): Services {
  const stateDir = source.M1L0_STATE_DIR || "/var/lib/m1l0-dev";
  return {
    redisUrl: source.REDIS_URL || "redis://127.0.0.1:6379",
    registryHost: source.REGISTRY_HOST || "127.0.0.1:5000",
    registryUsername: source.REGISTRY_USERNAME || "m1l0",
    registryPassword: source.REGISTRY_PASSWORD || "m1l0-local-registry-pw",
    gitServerUrl: source.GIT_SERVER_URL || "http://127.0.0.1:8174",
    gitFixturesDir: source.GIT_FIXTURES_DIR || `${stateDir}/git`,
    gitPrivateUsername: source.GIT_PRIVATE_USERNAME || "m1l0-bot",
    gitPrivateToken: source.GIT_PRIVATE_TOKEN || "m1l0-local-git-token",
    s3Endpoint: source.S3_ENDPOINT || "http://127.0.0.1:4569",
    s3Bucket: source.S3_BUCKET || "m1l0-builds",
    baseImageBusybox: source.BASE_IMAGE_BUSYBOX || "m1l0-local/busybox:latest",
    cacheDir: source.M1L0_CACHE_DIR || "/var/cache/m1l0",
  };
}

export const services: Services = loadServices();

/** A TCP port nothing listens on right now (on 127.0.0.1). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no free port"))));
    });
  });
}
