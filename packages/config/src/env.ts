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
