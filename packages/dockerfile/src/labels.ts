import type { BuildConfig } from "@m1l0/config";

export interface LabelInput {
  config: BuildConfig;
  buildId: string;
  /** the source commit, when the source is a git repository */
  commit?: string;
  /** the source URL, credential-free */
  source: string;
  /** the image the Dockerfile starts FROM */
  baseImage: string;
  /** the build's key (see the worker's build-key), compared with the registry's copy before rebuilding */
  buildKey?: string;
}

/** Drops any user:password@ from a URL; anything that does not parse is returned unchanged. */
function withoutCredentials(source: string): string {
  try {
    const url = new URL(source);
    if (!url.username && !url.password) return source;
    url.username = "";
    url.password = "";
    return url.toString();
  } catch {
    return source;
  }
}

/**
 * The image's labels: OCI annotation keys where one exists, `ai.m1l0.*` otherwise, and each
 * request tag as `ai.m1l0.tag.<Key>`. Deterministic order. No creation timestamp: it would
 * change every build and defeat caching and reproducibility.
 */
export function buildLabels(input: LabelInput): Record<string, string> {
  const { config, buildId, commit, baseImage } = input;
  const labels: Record<string, string> = {};
  labels["org.opencontainers.image.source"] = withoutCredentials(input.source);
  if (commit) labels["org.opencontainers.image.revision"] = commit;
  if (config.name) labels["org.opencontainers.image.title"] = config.name;
  if (config.namespace) labels["org.opencontainers.image.vendor"] = config.namespace;
  labels["org.opencontainers.image.version"] = config.revision;
  labels["org.opencontainers.image.base.name"] = baseImage;
  labels["ai.m1l0.build-id"] = buildId;
  if (input.buildKey) labels["ai.m1l0.build-key"] = input.buildKey;
  labels["ai.m1l0.framework"] = config.framework;
  if (config.version) labels["ai.m1l0.framework-version"] = config.version;
  labels["ai.m1l0.python"] = config.pyversion;
  labels["ai.m1l0.resource"] = config.resource;
  labels["ai.m1l0.base-image"] = baseImage;
  for (const tag of config.tags) labels[`ai.m1l0.tag.${tag.Key}`] = tag.Value;
  return labels;
}
