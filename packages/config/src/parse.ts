import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { buildConfigSchema, type BuildConfig } from "./build-config.js";
import { BuilderError, type FieldIssue } from "./errors.js";

/** Turns zod issues into `{field, message}` pairs, one per offending field. */
export function toFieldIssues(error: z.ZodError): FieldIssue[] {
  const issues: FieldIssue[] = [];
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      const parent = issue.path.join(".");
      for (const key of issue.keys) {
        issues.push({ field: parent ? `${parent}.${key}` : key, message: "is not a known field" });
      }
      continue;
    }
    const field = issue.path.length ? issue.path.join(".") : "(body)";
    const message = issue.message === "Required" || /received undefined/.test(issue.message) ? "is required" : issue.message;
    issues.push({ field, message });
  }
  return issues;
}

export function describeIssues(issues: FieldIssue[]): string {
  return issues.map((issue) => `${issue.field}: ${issue.message}`).join("; ");
}

/** Validates an already-decoded config object; throws VALIDATION_FAILED naming every bad field. */
export function parseBuildConfig(input: unknown): BuildConfig {
  if (input === null || typeof input !== "object" || Array.isArray(input)) {
    throw new BuilderError("VALIDATION_FAILED", "the build config must be an object (a mapping of field: value)", {
      issues: [{ field: "(body)", message: "must be an object" }],
    });
  }
  const result = buildConfigSchema.safeParse(input);
  if (!result.success) {
    const issues = toFieldIssues(result.error);
    throw new BuilderError("VALIDATION_FAILED", `invalid build config: ${describeIssues(issues)}`, { issues });
  }
  return result.data;
}

/** Decodes a config document; YAML is a superset of JSON so one parser serves both. */
export function decodeConfigText(text: string): unknown {
  try {
    return parseYaml(text, { maxAliasCount: 10 });
  } catch (cause) {
    throw new BuilderError("VALIDATION_FAILED", `the config is neither valid YAML nor JSON: ${(cause as Error).message}`, {
      cause,
      issues: [{ field: "(body)", message: "is not valid YAML or JSON" }],
    });
  }
}

export function parseBuildConfigText(text: string): BuildConfig {
  return parseBuildConfig(decodeConfigText(text));
}
