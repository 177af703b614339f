import type { Services } from "./stack.js";

/**
 * The only place the runner reads the environment: addresses of the services started by
 * scripts/services.sh, with the same defaults as scripts/lib.sh (which exports them).
 */
export function loadServices(source: NodeJS.ProcessEnv = process.env): Services {
  const stateDir = source.M1L0_STATE_DIR || "/var/lib/m1l0-dev";
  return {
    redisUrl: source.REDIS_URL || "redis://127.0.0.1:6379",
    registryHost: source.REGISTRY_HOST || "127.0.0.1:5000",
    registryUsername: source.REGISTRY_USERNAME || "m1l0",
    registryPassword: source.REGISTRY_PASSWORD || "m1l0-local-registry-pw",
    gitServerUrl: source.GIT_SERVER_URL || "http://127.0.0.1:8174",
    gitFixturesDir: source.GIT_FIXTURES_DIR || `${stateDir}/git`,
    s3Endpoint: source.S3_ENDPOINT || "http://127.0.0.1:4569",
    s3Bucket: source.S3_BUCKET || "m1l0-builds",
    cacheDir: source.M1L0_CACHE_DIR || "/var/cache/m1l0",
  };
}
