import type { BuildConfigMessage, BuildRequestMessage } from "./messages.js";

const CONFIG_FIELDS = [
  "namespace",
  "name",
  "framework",
  "version",
  "pyversion",
  "resource",
  "entry",
  "revision",
  "source",
  "service",
  "repository",
  "dockerfile",
] as const satisfies ReadonlyArray<keyof BuildConfigMessage>;

/**
 * Turns a BuildRequest into the config object REST accepts (the original YAML shape), not
 * yet validated. proto3 sends "" for an unset string, so empty strings are left out and
 * the schema's defaults apply; tags become {Key, Value} and ignores plain patterns.
 */
export function buildRequestToConfigInput(request: BuildRequestMessage): Record<string, unknown> {
  const input: Record<string, unknown> = {};
  for (const field of CONFIG_FIELDS) {
    const value = request.config?.[field];
    if (value) input[field] = value;
  }
  const tags = request.tags ?? [];
  if (tags.length > 0) input.tags = tags.map((tag) => ({ Key: tag.name ?? "", Value: tag.value ?? "" }));
  const ignores = request.ignores ?? [];
  if (ignores.length > 0) input.ignores = ignores.map((ignore) => ignore.value ?? "");
  return input;
}
