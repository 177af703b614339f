import { z } from "zod";

const TRUE = new Set(["true", "1", "yes"]);

/** A boolean environment variable: true/1/yes or false/0/no/empty, `defaultValue` when unset. */
export function envBoolean(defaultValue = false) {
  return z
    .enum(["true", "false", "1", "0", "yes", "no", ""])
    .default(defaultValue ? "true" : "false")
    .transform((value) => TRUE.has(value));
}

/** A separated list (commas by default): entries trimmed, empty ones dropped. */
export function splitList(text: string, separator: string | RegExp = ","): string[] {
  return text
    .split(separator)
    .map((entry) => entry.trim())
    .filter(Boolean);
}

/** A list environment variable (unset: empty), each entry passed through `normalise`. */
export function envList(options: { separator?: string | RegExp; normalise?: (entry: string) => string } = {}) {
  const normalise = options.normalise ?? ((entry: string) => entry);
  return z
    .string()
    .default("")
    .transform((text) => splitList(text, options.separator).map(normalise).filter(Boolean));
}

/** A registry host as configured (any case, maybe with a scheme or a trailing slash) → `host[:port]`, lowercase. */
export function normaliseRegistryHost(host: string): string {
  return host.trim().toLowerCase().replace(/^[a-z]+:\/\//, "").replace(/\/+$/, "");
}

/** REGISTRY_ALLOWLIST and the like: registry hosts separated by commas or white space, normalised. */
export function parseRegistryAllowlist(text: string): string[] {
  return splitList(text, /[,\s]+/).map(normaliseRegistryHost).filter(Boolean);
}

/**
 * Resolves `NAME_FILE` variables: for each name, when `NAME_FILE` is set, `NAME` becomes the
 * file's contents (trailing newline trimmed), so secrets can come from mounted secret files
 * (Docker/Swarm secrets, Kubernetes secret volumes) instead of the environment. Setting both
 * is refused: which one wins would be a guess. Returns a new object; `source` is not changed.
 */
export function resolveFileVariables(source: NodeJS.ProcessEnv, names: readonly string[], read: (file: string) => string): NodeJS.ProcessEnv {
  const resolved: NodeJS.ProcessEnv = { ...source };
  for (const name of names) {
    const file = source[`${name}_FILE`];
    if (!file) continue;
    if (source[name]) throw new Error(`set either ${name} or ${name}_FILE, not both`);
    let text: string;
    try {
      text = read(file);
    } catch (cause) {
      throw new Error(`cannot read ${name}_FILE (${file}): ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    }
    resolved[name] = text.replace(/\r?\n$/, "");
  }
  return resolved;
}

/** The AWS SDK's default chain reads these from process.env; entry points resolve their `_FILE` forms into it. */
export const AWS_SECRET_VARIABLES = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] as const;
