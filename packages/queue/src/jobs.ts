import { BUILD_ID_PATTERN, buildConfigSchema } from "@m1l0/config";
import { z } from "zod";

/**
 * The typed job catalog: queue name, payload schema and default options, shared by every
 * producer (API, SDK users enqueueing directly) and consumer (worker). Payloads carry the
 * build id and validated config only — never credentials.
 */
export const BUILD_QUEUE_NAME = "m1l0-builds";
export const BUILD_JOB_NAME = "build";

export const buildJobSchema = z.strictObject({
  buildId: z.string().regex(BUILD_ID_PATTERN),
  config: buildConfigSchema,
});
export type BuildJobData = z.output<typeof buildJobSchema>;

export const DEFAULT_BUILD_JOB_OPTIONS = {
  // transient failures (network, daemon restarts) retry; permanent ones throw UnrecoverableError
  attempts: 3,
  backoff: { type: "exponential", delay: 2_000, jitter: 0.5 },
  removeOnComplete: { age: 24 * 3600, count: 1_000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 5_000 },
} as const;
