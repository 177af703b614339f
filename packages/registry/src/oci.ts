import { BuilderError, type BuildConfig } from "@m1l0/config";
import type { PushTarget, RegistryResolver } from "./types.js";

export interface RegistryCredential {
  /** registry host[:port], compared case-insensitively */
  host: string;
  username: string;
  password: string;
}

/**
 * Parses `host=username:password` entries (REGISTRY_CREDENTIALS, comma separated; or a
 * secret file, one per line). Errors never echo the entry: it holds a password.
 */
export function parseRegistryCredentials(text: string, separator: RegExp = /[,\n]/): RegistryCredential[] {
  return text
    .split(separator)
    .map((item) => item.trim())
    .filter((item) => item && !item.startsWith("#"))
    .map((item, index) => {
      const match = /^([^=\s]+)=([^:\s]+):(.+)$/.exec(item);
      if (!match) throw new Error(`registry credential #${index + 1} must look like host=username:password`);
      return { host: match[1]!.toLowerCase(), username: match[2]!, password: match[3]! };
    });
}

/** Comma list of registry hosts → normalised set (lowercase, no scheme or trailing slash); one parser for API and worker. */
export { parseRegistryAllowlist } from "@m1l0/config";

export function isRegistryAllowed(allowlist: readonly string[], host: string): boolean {
  return allowlist.includes(host.toLowerCase());
}

export interface OciRegistryOptions {
  /** hosts a request may name in `registry` (REGISTRY_ALLOWLIST) */
  allowlist: readonly string[];
  /** per-host credentials; a host without an entry is pushed to anonymously */
  credentials: readonly RegistryCredential[];
}

/** Any OCI registry named by the request's `registry` field, if the operator allowed it. */
export class OciRegistryResolver implements RegistryResolver {
  constructor(private readonly options: OciRegistryOptions) {}

  async resolve(config: BuildConfig): Promise<PushTarget> {
    const host = config.registry?.toLowerCase();
    if (!host) {
      throw new BuilderError("VALIDATION_FAILED", "registry: is required for an OCI registry target", { issues: [{ field: "registry", message: "is required" }] });
    }
    // the API checks too; the worker re-checks because jobs can be enqueued without the API
    if (!isRegistryAllowed(this.options.allowlist, host)) {
      throw new BuilderError("VALIDATION_FAILED", `registry: ${host} is not on this worker's registry allowlist`, {
        issues: [{ field: "registry", message: "is not on the registry allowlist" }],
      });
    }
    const credential = this.options.credentials.find((entry) => entry.host === host);
    return {
      registry: host,
      repository: config.repository,
      tag: config.revision,
      reference: `${host}/${config.repository}:${config.revision}`,
      auth: async () => (credential ? { username: credential.username, password: credential.password, serveraddress: host } : undefined),
    };
  }
}

/** Routes requests that name a `registry` to the OCI resolver, all others to the service's own. */
export function withRegistryOverride(serviceResolver: RegistryResolver, ociResolver: RegistryResolver): RegistryResolver {
  return { resolve: (config) => (config.registry ? ociResolver.resolve(config) : serviceResolver.resolve(config)) };
}
