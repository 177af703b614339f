import { z } from "zod";

const bool = z
  .enum(["true", "false", "1", "0", "yes", "no", ""])
  .default("false")
  .transform((value) => value === "true" || value === "1" || value === "yes");

const envSchema = z.object({
  REDIS_URL: z.string().default("redis://127.0.0.1:6379"),
  HOST: z.string().default("127.0.0.1"),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  BUILD_QUEUE_NAME: z.string().optional(),
  BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).default(256 * 1024),
  ALLOW_HTTP_SOURCES: bool,
  ALLOW_DIR_SOURCES: bool,
  CATALOG_FILE: z.string().optional(),
  CATALOG_OVERRIDES_FILE: z.string().optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

export type ApiEnv = z.output<typeof envSchema>;

export function loadApiEnv(source: NodeJS.ProcessEnv = process.env): ApiEnv {
  const result = envSchema.safeParse(source);
  if (!result.success) {
    throw new Error(`invalid API environment: ${result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  }
  return result.data;
}
