import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { BuilderError, envBoolean, envList, parseRegistryAllowlist, resolveFileVariables } from "@m1l0/config";
import { z } from "zod";

const bool = envBoolean();

/** secrets that may also come from a file named by `<NAME>_FILE` (API_TOKENS_FILE and the TLS key are files already) */
export const API_FILE_VARIABLES = ["REDIS_URL"] as const;

const envSchema = z.object({
  /** may carry a password (redis://:pw@host:6379): prefer REDIS_URL_FILE */
  REDIS_URL: z.string().default("redis://127.0.0.1:6379"),
  /** namespace of build records and event streams; lets stacks share one Redis */
  REDIS_KEY_PREFIX: z.string().regex(/^[A-Za-z0-9:_.-]{1,64}$/).default("m1l0:"),
  HOST: z.string().default("127.0.0.1"),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  /** PEM files; REST serves HTTPS when both are set, plain HTTP when neither (e.g. TLS ends at a proxy) */
  REST_TLS_CERT_FILE: z.string().optional(),
  REST_TLS_KEY_FILE: z.string().optional(),
  GRPC_HOST: z.string().default("127.0.0.1"),
  GRPC_PORT: z.coerce.number().int().min(0).max(65535).default(50051),
  /** PEM files; gRPC serves TLS when both are set, plaintext when neither */
  GRPC_TLS_CERT_FILE: z.string().optional(),
  GRPC_TLS_KEY_FILE: z.string().optional(),
  BUILD_QUEUE_NAME: z.string().optional(),
  BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).default(256 * 1024),
  ALLOW_HTTP_SOURCES: bool,
  ALLOW_DIR_SOURCES: bool,
  /** the workers' source host policy, so requests they would refuse are refused before enqueueing: keep both equal to the workers' */
  ALLOW_PRIVATE_SOURCE_HOSTS: bool,
  SOURCE_HOST_ALLOWLIST: envList(),
  /** registry hosts a request may name in `registry` (comma list); empty = none */
  REGISTRY_ALLOWLIST: z.string().default("").transform(parseRegistryAllowlist),
  /** archived logs and records: S3 when S3_BUCKET is set (credentials from the AWS chain), else ARTIFACTS_DIR */
  S3_BUCKET: z.string().optional(),
  S3_ENDPOINT: z.string().optional(),
  S3_REGION: z.string().default("us-east-1"),
  S3_FORCE_PATH_STYLE: bool,
  ARTIFACTS_DIR: z.string().default(path.join(tmpdir(), "m1l0-artifacts")),
  CATALOG_FILE: z.string().optional(),
  CATALOG_ADDITIONS_FILE: z.string().optional(),
  CATALOG_OVERRIDES_FILE: z.string().optional(),
  /** largest `timeout` (seconds) a build request may ask for; keep equal to the workers' value */
  BUILD_TIMEOUT_MAX_SECONDS: z.coerce.number().int().min(1).default(4 * 3600),
  /** file of `name:role:sha256hex` token entries (create them with `m1l0 token create`) */
  API_TOKENS_FILE: z.string().optional(),
  /** how often the API re-reads API_TOKENS_FILE when fs.watch misses a change (it also reloads on change events and SIGHUP) */
  API_TOKENS_POLL_MS: z.coerce.number().int().min(100).max(60_000).default(1000),
  /** the same entries inline (comma separated), e.g. for development; hashes, never tokens */
  API_TOKENS: z.string().default(""),
  /** serve without authentication (every caller is an anonymous admin); refused while tokens are configured */
  AUTH_DISABLED: bool,
  /** build submissions (POST /builds + gRPC Build) per token per window; 0 = unlimited */
  SUBMIT_RATE_LIMIT_MAX: z.coerce.number().int().min(0).default(30),
  SUBMIT_RATE_LIMIT_WINDOW_SECONDS: z.coerce.number().int().min(1).default(60),
  /** serve /metrics without a token (e.g. for a scraper on a private network); default: admin token */
  METRICS_PUBLIC: bool,
  /** lifetime of a dashboard sign-in (the session cookie and its Redis key), fixed from sign-in */
  DASHBOARD_SESSION_TTL_SECONDS: z.coerce.number().int().min(60).max(24 * 3600).default(3600),
  /** mark the dashboard's cookie Secure although the API serves plain HTTP (TLS ends at a proxy) */
  DASHBOARD_COOKIE_SECURE: bool,
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

export type ApiEnv = z.output<typeof envSchema>;

export function loadApiEnv(source: NodeJS.ProcessEnv = process.env): ApiEnv {
  const result = envSchema.safeParse(resolveFileVariables(source, API_FILE_VARIABLES, (file) => readFileSync(file, "utf8")));
  if (!result.success) {
    throw new Error(`invalid API environment: ${result.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  }
  return result.data;
}

/** HTTPS from PEM files when both are set, plain HTTP when neither; one without the other is a mistake. */
export function restTls(env: Pick<ApiEnv, "REST_TLS_CERT_FILE" | "REST_TLS_KEY_FILE">): { cert: Buffer; key: Buffer } | undefined {
  const { REST_TLS_CERT_FILE: certFile, REST_TLS_KEY_FILE: keyFile } = env;
  if (!certFile && !keyFile) return undefined;
  if (!certFile || !keyFile) {
    const field = certFile ? "REST_TLS_KEY_FILE" : "REST_TLS_CERT_FILE";
    throw new BuilderError("VALIDATION_FAILED", `${field}: is required when the other REST TLS file is set`, { issues: [{ field, message: "is required with its pair" }] });
  }
  const read = (field: string, file: string) => {
    try {
      return readFileSync(file);
    } catch (error) {
      throw new BuilderError("VALIDATION_FAILED", `${field}: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error, issues: [{ field, message: "cannot be read" }] });
    }
  };
  return { cert: read("REST_TLS_CERT_FILE", certFile), key: read("REST_TLS_KEY_FILE", keyFile) };
}
