import type Docker from "dockerode";
import type { Logger } from "pino";
import { DockerBuildEgress, type ServiceEndpoint } from "./egress.js";
import { IptablesFirewall, type Firewall } from "./firewall.js";
import { parseDestinations, parseProxy, type EgressMode } from "./policy.js";

export { DockerBuildEgress, FixedNetworkEgress, effectiveMode, proxyArgs, type BuildEgress, type EgressPreparation, type ServiceEndpoint } from "./egress.js";
export { IptablesFirewall, reconcile, removeRules, type Firewall } from "./firewall.js";
export * from "./policy.js";

/** The slice of the worker's environment the egress policy reads (see env.ts). */
export interface EgressEnv {
  BUILD_EGRESS: EgressMode;
  BUILD_NETWORK: string;
  BUILD_EGRESS_ALLOW: string;
  BUILD_EGRESS_DENY: string;
  BUILD_EGRESS_DNS: string;
  BUILD_EGRESS_PROXY?: string | undefined;
  BUILD_EGRESS_RULES: "worker" | "external";
  REDIS_URL: string;
  S3_ENDPOINT?: string | undefined;
  ECR_ENDPOINT?: string | undefined;
  DOCKERHUB_REGISTRY: string;
  INSECURE_REGISTRIES: string;
  registryAllowlist: string[];
  registryCredentials: Array<{ host: string }>;
}

function endpointOfUrl(name: string, text: string | undefined, defaultPort: number): ServiceEndpoint[] {
  if (!text) return [];
  try {
    const url = new URL(text);
    const port = url.port ? Number(url.port) : url.protocol === "https:" ? 443 : url.protocol === "http:" ? 80 : defaultPort;
    return [{ name, host: url.hostname.replace(/^\[|\]$/g, ""), port }];
  } catch {
    return [];
  }
}

function endpointOfHost(name: string, text: string): ServiceEndpoint | undefined {
  const match = /^([^:/\s]+)(?::(\d+))?$/.exec(text.trim().toLowerCase());
  return match ? { name, host: match[1]!, port: match[2] ? Number(match[2]) : 443 } : undefined;
}

/** Redis, S3, ECR and every registry the worker talks to: what a build step must not reach. */
export function workerServices(env: EgressEnv): ServiceEndpoint[] {
  const registries = new Set([
    ...env.registryAllowlist,
    ...env.registryCredentials.map((entry) => entry.host),
    ...env.INSECURE_REGISTRIES.split(",").map((host) => host.trim()).filter(Boolean),
    // Docker Hub itself is public and pulled from by the daemon, not by build steps
    ...(env.DOCKERHUB_REGISTRY !== "docker.io" ? [env.DOCKERHUB_REGISTRY] : []),
  ]);
  return [
    ...endpointOfUrl("redis", env.REDIS_URL, 6379),
    ...endpointOfUrl("s3", env.S3_ENDPOINT, 443),
    ...endpointOfUrl("ecr", env.ECR_ENDPOINT, 443),
    ...[...registries].map((host) => endpointOfHost("registry", host)).filter((entry): entry is ServiceEndpoint => entry !== undefined),
  ];
}

/** The one wiring point: the worker's environment → its build egress policy (`installer`: the `egress install` command, which always writes the rules). */
export function createBuildEgress(env: EgressEnv, docker: Docker, logger: Logger, firewall: Firewall = new IptablesFirewall(), installer = false): DockerBuildEgress {
  return new DockerBuildEgress({
    rules: installer ? "worker" : env.BUILD_EGRESS_RULES,
    mode: env.BUILD_EGRESS,
    network: env.BUILD_NETWORK,
    docker,
    firewall,
    allow: parseDestinations(env.BUILD_EGRESS_ALLOW, "BUILD_EGRESS_ALLOW"),
    deny: parseDestinations(env.BUILD_EGRESS_DENY, "BUILD_EGRESS_DENY"),
    services: workerServices(env),
    resolvers: env.BUILD_EGRESS_DNS.split(",").map((entry) => entry.trim()).filter(Boolean),
    ...(env.BUILD_EGRESS_PROXY ? { proxy: parseProxy(env.BUILD_EGRESS_PROXY) } : {}),
    logger: logger.child({ component: "egress" }),
  });
}
