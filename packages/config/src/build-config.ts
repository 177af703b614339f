import { z } from "zod";

// Characters that must never reach a Dockerfile, a label, a path or a log line unescaped.
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

const plainText = (max: number) =>
  z
    .string()
    .max(max, `must be at most ${max} characters`)
    .refine((value) => !CONTROL_CHARS.test(value), "must not contain control characters or line breaks")
    .refine((value) => value.isWellFormed(), "must be valid Unicode text");

/** OCI distribution spec: path components of lowercase alphanumerics joined by separators. */
const REPOSITORY_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
/** OCI distribution spec tag grammar. */
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export const repositorySchema = z
  .string()
  .min(1, "is required")
  .max(255, "must be at most 255 characters")
  .refine(
    (value) => value.split("/").every((part) => REPOSITORY_COMPONENT.test(part)),
    "must be lowercase path components of letters and digits separated by '.', '_', '__' or '-', joined by '/' (e.g. team/project)",
  );

export const revisionSchema = z
  .string()
  .regex(TAG, "must be a valid image tag: letters, digits, '_', '.', '-', not starting with '.' or '-', at most 128 characters");

/** A path inside the source tree: relative, no `..`, no control characters. */
export const relativePathSchema = plainText(1024).refine(
  (value) => value.length > 0 && !value.startsWith("/") && !value.includes("\\") && !value.split("/").some((part) => part === ".." || part === ""),
  "must be a relative path inside the source (no leading '/', no '..', no empty segments)",
);

export const SOURCE_SCHEMES = ["https", "http", "s3", "dir"] as const;

export const sourceSchema = plainText(2048)
  .min(1, "is required")
  .refine((value) => {
    try {
      const url = new URL(value);
      return (SOURCE_SCHEMES as readonly string[]).includes(url.protocol.slice(0, -1));
    } catch {
      return false;
    }
  }, "must be a URL: https://host/repo.git[#ref], s3://bucket/key.tar.gz or dir:///absolute/path")
  .refine((value) => {
    try {
      const url = new URL(value);
      if (url.protocol === "s3:") return url.hostname.length > 0 && /\.(tar\.gz|tgz)$/.test(url.pathname);
      if (url.protocol === "dir:") return url.pathname.startsWith("/") && !url.hostname;
      if (url.username || url.password) return false;
      return url.hostname.length > 0;
    } catch {
      return true; // reported by the refinement above
    }
  }, "s3 sources must be s3://bucket/key.tar.gz (or .tgz); dir sources dir:///absolute/path; git URLs must not embed credentials");

export const tagSchema = z.strictObject({
  // Docker splits a label at its first "=", so a key may not contain one
  Key: plainText(128).min(1, "must not be empty").refine((key) => !key.includes("="), "must not contain '='"),
  Value: plainText(256),
});

/** A registry host as Docker names it: DNS name or IPv4 address, optional :port, no scheme or path. */
const REGISTRY_HOST = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*(?::(\d{1,5}))?$/;

export const registryHostSchema = z
  .string()
  .max(253, "must be at most 253 characters")
  .refine((value) => {
    const match = REGISTRY_HOST.exec(value);
    return match !== null && (match[1] === undefined || Number(match[1]) <= 65535);
  }, "must be a registry host[:port] such as ghcr.io or registry.example.com:5000 (lowercase, no scheme or path)");

/**
 * Ignore patterns are matched in time linear in path × pattern (@m1l0/context's NFA matcher), so
 * wildcards are not capped: length (256) and count (500) bound the work. What is refused here is a
 * pattern Docker itself rejects: an unterminated `[` character class or a reversed range.
 */
export function ignorePatternSyntaxError(pattern: string): string | null {
  for (let index = 0; index < pattern.length; index++) {
    const char = pattern[index];
    if (char === "\\") index++;
    else if (char === "[") {
      index++;
      if (pattern[index] === "^") index++;
      let first = true;
      for (;;) {
        let member = pattern[index];
        if (member === undefined) return "has an unterminated character class '['";
        if (member === "]" && !first) break;
        first = false;
        if (member === "\\") member = pattern[++index];
        if (member === undefined) return "has an unterminated character class '['";
        if (pattern[index + 1] === "-" && pattern[index + 2] !== undefined && pattern[index + 2] !== "]") {
          index += 2;
          let end = pattern[index];
          if (end === "\\") end = pattern[++index];
          if (end === undefined) return "has an unterminated character class '['";
          if (end < member) return `has a reversed character range '${member}-${end}'`;
        }
        index++;
      }
    }
  }
  return null;
}

export const ignorePatternSchema = plainText(256)
  .min(1, "must not be empty")
  .superRefine((value, context) => {
    const problem = ignorePatternSyntaxError(value);
    if (problem) context.addIssue({ code: "custom", message: problem });
  });

/**
 * The request users send: the original service's config, accepted field for field.
 * Unknown fields are errors (a typo must not silently change a build).
 */
export const buildConfigSchema = z.strictObject({
  service: z.enum(["dockerhub", "ecr"], { error: "must be one of: dockerhub, ecr" }),
  repository: repositorySchema,
  source: sourceSchema,
  revision: revisionSchema.default("latest"),
  namespace: plainText(128).optional(),
  name: plainText(128).optional(),
  framework: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "must be a lowercase framework name such as tensorflow, pytorch or python").default("python"),
  version: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,31}$/, "must be a version such as 2.6.0").optional(),
  pyversion: z
    .string({ error: (issue) => (issue.input === undefined ? "is required" : "must be a string: quote it in YAML (pyversion: \"3.10\")") })
    .regex(/^3\.\d{1,2}$/, "must be a Python version such as \"3.11\"")
    .default("3.11"),
  resource: z.enum(["cpu", "gpu"], { error: "must be one of: cpu, gpu" }).default("cpu"),
  entry: relativePathSchema.default("main.py"),
  dockerfile: z.union([z.literal(""), relativePathSchema]).optional(),
  tags: z.array(tagSchema).max(50, "must have at most 50 tags").default([]),
  ignores: z.array(ignorePatternSchema).max(500, "must have at most 500 patterns").default([]),
  /** push to this OCI registry instead of Docker Hub (service dockerhub only; operator-allowlisted) */
  registry: registryHostSchema.optional(),
  /** seconds this build may run before it is aborted; capped by the operator's BUILD_TIMEOUT_MAX_SECONDS */
  timeout: z.number({ error: "must be a whole number of seconds" }).int("must be a whole number of seconds").min(1, "must be at least 1 second").max(7 * 24 * 3600, "must be at most 604800 seconds").optional(),
}).refine((config) => !(config.registry && config.service === "ecr"), {
  path: ["registry"],
  message: "is not used with service ecr (the ECR registry comes from the worker's AWS account); use service dockerhub for other registries",
});

/** What a user may send (defaults not yet applied). */
export type BuildConfigInput = z.input<typeof buildConfigSchema>;
/** A validated config with defaults applied: what travels in job data. */
export type BuildConfig = z.output<typeof buildConfigSchema>;
export type BuildTag = z.output<typeof tagSchema>;
