import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { parseRegistryAllowlist, parseRegistryCredentials, type RegistryCredential } from "@m1l0/registry";
import { envBoolean, envList, resolveFileVariables, splitList } from "@m1l0/config";
import { isIP } from "node:net";
import { z } from "zod";
import { EGRESS_MODES } from "./egress/policy.js";
import { isAptSourceLine } from "@m1l0/dockerfile";
import { LOG_LINE_MAX_BYTES_DEFAULT, LOG_TAIL_EVENTS_DEFAULT } from "@m1l0/queue";
import { MULTIPART_MIN_PART_BYTES } from "@m1l0/storage";
import { loadWebhookSettings, type WebhookSettings } from "@m1l0/webhooks";

const bool = envBoolean();

/** Every variable the worker reads, parsed once at start-up (documented in .env.example). */
/** secrets that may also come from a file named by `<NAME>_FILE` (git, Docker Hub and registry credentials have their own _FILE forms below) */
export const WORKER_FILE_VARIABLES = ["REDIS_URL"] as const;

const envSchema = z.object({
  /** may carry a password (redis://:pw@host:6379): prefer REDIS_URL_FILE */
  REDIS_URL: z.string().default("redis://127.0.0.1:6379"),
  /** namespace of build records and event streams; lets stacks share one Redis */
  REDIS_KEY_PREFIX: z.string().regex(/^[A-Za-z0-9:_.-]{1,64}$/).default("m1l0:"),
  /** shown in records; in a container every replica is pid 1 and host-networked ones share the hostname, so pid 1 gets a random suffix */
  WORKER_ID: z.string().default(`${hostname()}-${process.pid === 1 ? randomBytes(4).toString("hex") : process.pid}`),
  WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(2),
  BUILD_QUEUE_NAME: z.string().optional(),
  DOCKER_SOCKET: z.string().default("/var/run/docker.sock"),
  /** the network of RUN steps: with BUILD_EGRESS public/proxy a bridge network the worker owns (created if missing); `none` = no network */
  BUILD_NETWORK: z.string().min(1).default("m1l0-build"),
  /** what RUN steps may reach: public (default) | proxy | none | unrestricted (see apps/worker/src/egress) */
  BUILD_EGRESS: z.enum(EGRESS_MODES).default("public"),
  /** comma list of host[:port] (IPv4, CIDR or name) build steps may reach although private, e.g. a company package index */
  BUILD_EGRESS_ALLOW: z.string().default(""),
  /** more host[:port] build steps must not reach, besides the worker's own Redis, S3 and registries */
  BUILD_EGRESS_DENY: z.string().default(""),
  /** the resolvers the daemon's embedded DNS forwards to (port 53 is let through to them); empty = the nameservers of /etc/resolv.conf */
  BUILD_EGRESS_DNS: z
    .string()
    .default("")
    .refine((text) => splitList(text).every((entry) => isIP(entry) === 4), "must be IPv4 addresses, comma separated"),
  /** BUILD_EGRESS=proxy: http://host:port of the operator's proxy, given to builds as HTTP(S)_PROXY */
  BUILD_EGRESS_PROXY: z.string().optional(),
  /** worker: the worker installs and keeps the rules (root on the daemon's host); external: the deployment runs `egress install`, the worker only uses the network */
  BUILD_EGRESS_RULES: z.enum(["worker", "external"]).default("worker"),
  /** how often the worker re-checks (and restores) the network and its rules; 0 = only before each build */
  BUILD_EGRESS_CHECK_SECONDS: z.coerce.number().min(0).default(30),
  /** apt.txt installs from these one-line "deb …" sources (";" separated) instead of the base image's: a mirror */
  BUILD_APT_SOURCES: z
    .string()
    .default("")
    .transform((text) => text.split(/[;\n]/).map((line) => line.trim()).filter(Boolean))
    .refine((lines) => lines.every(isAptSourceLine), 'must be one-line apt sources, ";" separated, e.g. "deb [trusted=yes] http://mirror.internal/debian bookworm main"'),
  /** skip-if-unchanged: finish as `cached` when the target tag already holds an image with the same build key */
  SKIP_UNCHANGED: envBoolean(true),
  /** registry hosts the worker reads over plain HTTP (match the daemon's insecure-registries); loopback always is */
  /** run the built image once (sandboxed) and fail with MISSING_DEPENDENCY when an import does not resolve, before the push */
  IMPORT_CHECK: envBoolean(true),
  /** the import check's deadline; past it the check is skipped (with a note), the container removed */
  IMPORT_CHECK_TIMEOUT_SECONDS: z.coerce.number().min(1).max(600).default(30),
  INSECURE_REGISTRIES: z.string().default(""),
  BUILD_MEMORY_MB: z.coerce.number().int().min(0).default(4096),
  BUILD_CPUS: z.coerce.number().min(0).default(0),
  /** most processes one build's RUN steps may have at once, enforced by a per-build pids cgroup; 0 = no limit */
  BUILD_PIDS_LIMIT: z.coerce.number().int().min(0).default(1024),
  /** the cgroup filesystem shared with the Docker daemon (cgroupfs driver), where per-build cgroups are created */
  BUILD_CGROUP_ROOT: z.string().default("/sys/fs/cgroup"),
  /** comma list of registries (host[:port]) a user Dockerfile's FROM / COPY --from may use; empty = docker.io + the catalog's */
  ALLOWED_BASE_REGISTRIES: z.string().default(""),
  WORK_DIR: z.string().default(tmpdir()),
  /** reuse layers of the repository's last pushed image (pulled when this daemon lacks it) as cache-from */
  CACHE_FROM_REGISTRY: envBoolean(true),
  ALLOW_HTTP_SOURCES: bool,
  ALLOW_DIR_SOURCES: bool,
  DIR_SOURCE_ROOTS: envList(),
  /** let git hosts resolve to private/loopback/link-local addresses (cloud metadata stays refused) */
  ALLOW_PRIVATE_SOURCE_HOSTS: bool,
  /** comma list of host names, addresses or CIDRs git sources may use even when private (tests: 127.0.0.0/8) */
  SOURCE_HOST_ALLOWLIST: envList(),
  CLONE_TIMEOUT_SECONDS: z.coerce.number().positive().default(600),
  CLONE_MAX_BYTES: z.coerce.number().int().positive().default(2 * 1024 ** 3),
  /** cap on what a clone checks out (a small pack can inflate hugely), bytes and files */
  CLONE_MAX_CHECKOUT_BYTES: z.coerce.number().int().positive().default(2 * 1024 ** 3),
  CLONE_MAX_CHECKOUT_FILES: z.coerce.number().int().positive().default(200_000),
  /** host=username:token pairs, comma separated; or a file with one pair per line */
  GIT_CREDENTIALS: z.string().default(""),
  GIT_CREDENTIALS_FILE: z.string().optional(),
  S3_ENDPOINT: z.string().optional(),
  S3_REGION: z.string().default("us-east-1"),
  S3_FORCE_PATH_STYLE: bool,
  /** bucket for build logs, context archives and final records; unset → ARTIFACTS_DIR on local disk */
  S3_BUCKET: z.string().optional(),
  ARTIFACTS_DIR: z.string().default(path.join(tmpdir(), "m1l0-artifacts")),
  /** a file the worker rewrites every HEALTH_INTERVAL_SECONDS while Redis and its daemon answer (for a container HEALTHCHECK); unset = none */
  HEALTH_FILE: z.string().optional(),
  HEALTH_INTERVAL_SECONDS: z.coerce.number().min(1).default(10),
  /** events of a build kept in its Redis stream (the live tail; the archived log is complete) */
  LOG_TAIL_EVENTS: z.coerce.number().int().min(100).max(100_000).default(LOG_TAIL_EVENTS_DEFAULT),
  /** log lines longer than this (UTF-8 bytes) are cut there, with a marker saying so */
  LOG_LINE_MAX_BYTES: z.coerce.number().int().min(256).max(1024 * 1024).default(LOG_LINE_MAX_BYTES_DEFAULT),
  /** a running build's log goes to S3 as a multipart part each time this much gathered (S3's minimum: 5 MiB) */
  LOG_PART_BYTES: z.coerce.number().int().min(MULTIPART_MIN_PART_BYTES).default(MULTIPART_MIN_PART_BYTES),
  /** a worker's lease on a build's uploads; once it lapses (the worker died) another worker's sweeper takes over */
  ARTIFACT_LEASE_MS: z.coerce.number().int().min(1_000).default(30_000),
  /** how often each worker looks for builds whose uploads lost their worker */
  ARTIFACT_SWEEP_INTERVAL_MS: z.coerce.number().int().min(200).default(10_000),
  /** port of the worker's Prometheus /metrics listener; unset = no listener */
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  METRICS_HOST: z.string().default("127.0.0.1"),
  DOCKERHUB_REGISTRY: z.string().default("docker.io"),
  DOCKERHUB_USERNAME: z.string().optional(),
  DOCKERHUB_TOKEN: z.string().optional(),
  DOCKERHUB_TOKEN_FILE: z.string().optional(),
  /** ECR region; falls back to AWS_REGION. ECR credentials come from the AWS default chain */
  ECR_REGION: z.string().optional(),
  AWS_REGION: z.string().optional(),
  ECR_ENDPOINT: z.string().optional(),
  ECR_TOKEN_REFRESH_MARGIN_SECONDS: z.coerce.number().int().min(0).default(300),
  ECR_TAG_MUTABILITY: z.enum(["MUTABLE", "IMMUTABLE"]).default("MUTABLE"),
  ECR_SCAN_ON_PUSH: bool,
  /** host=username:password pairs for OCI registries, comma separated; or a file, one per line */
  REGISTRY_CREDENTIALS: z.string().default(""),
  REGISTRY_CREDENTIALS_FILE: z.string().optional(),
  REGISTRY_ALLOWLIST: z.string().default(""),
  /** per-build time limit when the request sets no `timeout`; capped by BUILD_TIMEOUT_MAX_SECONDS */
  BUILD_TIMEOUT_SECONDS: z.coerce.number().int().min(1).default(3600),
  BUILD_TIMEOUT_MAX_SECONDS: z.coerce.number().int().min(1).default(4 * 3600),
  /** after SIGTERM, running builds get this long to finish before they are aborted and requeued */
  WORKER_SHUTDOWN_GRACE_SECONDS: z.coerce.number().min(0).default(30),
  /** BullMQ job lock: renewed every half of it while a build runs; a killed worker's job is taken over once it lapses */
  WORKER_LOCK_DURATION_MS: z.coerce.number().int().min(1_000).default(60_000),
  /** how often each worker looks for jobs whose lock lapsed (their worker died) and requeues them */
  WORKER_STALLED_INTERVAL_MS: z.coerce.number().int().min(500).default(30_000),
  /** a job whose worker died more than this many times fails instead of being requeued again */
  WORKER_MAX_STALLED_COUNT: z.coerce.number().int().min(0).default(2),
  /** V8's --heap-growing-percent: a full GC once the old generation is this much past the live heap (RSS stays near it); 0 = V8's default (about 4×) */
  WORKER_HEAP_GROWING_PERCENT: z.coerce.number().int().min(0).max(300).default(10),
  /** retries of a push within one attempt when the registry is unreachable or answers 5xx */
  PUSH_RETRIES: z.coerce.number().int().min(0).max(20).default(4),
  /** first delay between push retries; doubles each time */
  PUSH_RETRY_DELAY_MS: z.coerce.number().int().min(0).default(2_000),
  /** image cache of this worker's daemon: at most this many images built by us (least recently built go first) */
  IMAGE_CACHE_MAX_IMAGES: z.coerce.number().int().min(0).default(50),
  /** … and at most this many bytes of them (image sizes as the daemon reports them, shared layers counted per image) */
  IMAGE_CACHE_MAX_BYTES: z.coerce.number().int().min(0).default(20 * 1024 ** 3),
  /** label value that marks the images this worker's cache owns; workers sharing a daemon and scope share the cache */
  IMAGE_CACHE_SCOPE: z.string().regex(/^[A-Za-z0-9:_.-]{1,128}$/).default("default"),
  /** untagged (dangling) images are removed once seen dangling this long (failed builds' leftovers, superseded tags); 0 = never */
  IMAGE_CACHE_DANGLING_MIN_AGE_SECONDS: z.coerce.number().int().min(0).default(600),
  CATALOG_FILE: z.string().optional(),
  CATALOG_ADDITIONS_FILE: z.string().optional(),
  CATALOG_OVERRIDES_FILE: z.string().optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

export type WorkerEnv = z.output<typeof envSchema> & {
  gitCredentials: Array<{ host: string; username: string; token: string }>;
  dockerHubToken: string | undefined;
  registryCredentials: RegistryCredential[];
  registryAllowlist: string[];
  /** the completion webhooks (WEBHOOKS_FILE and WEBHOOK_*, see @m1l0/webhooks); undefined: none */
  webhooks: WebhookSettings | undefined;
};

function parseGitCredentials(text: string): WorkerEnv["gitCredentials"] {
  return text
    .split(/[,\n]/)
    .map((item) => item.trim())
    .filter(Boolean)
    .map((item) => {
      const match = /^([^=\s]+)=([^:\s]+):(\S+)$/.exec(item);
      if (!match) throw new Error("GIT_CREDENTIALS entries must look like host=username:token");
      return { host: match[1]!, username: match[2]!, token: match[3]! };
    });
}

export function loadWorkerEnv(source: NodeJS.ProcessEnv = process.env): WorkerEnv {
  const result = envSchema.safeParse(resolveFileVariables(source, WORKER_FILE_VARIABLES, (file) => readFileSync(file, "utf8")));
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ");
    throw new Error(`invalid worker environment: ${problems}`);
  }
  const env = result.data;
  const gitText = [env.GIT_CREDENTIALS, env.GIT_CREDENTIALS_FILE ? readFileSync(env.GIT_CREDENTIALS_FILE, "utf8") : ""].join("\n");
  const dockerHubToken = env.DOCKERHUB_TOKEN_FILE ? readFileSync(env.DOCKERHUB_TOKEN_FILE, "utf8").trim() : env.DOCKERHUB_TOKEN;
  const registryCredentials = [
    ...parseRegistryCredentials(env.REGISTRY_CREDENTIALS, /,/),
    ...(env.REGISTRY_CREDENTIALS_FILE ? parseRegistryCredentials(readFileSync(env.REGISTRY_CREDENTIALS_FILE, "utf8"), /\n/) : []),
  ];
  return { ...env, gitCredentials: parseGitCredentials(gitText), dockerHubToken, registryCredentials, registryAllowlist: parseRegistryAllowlist(env.REGISTRY_ALLOWLIST), webhooks: loadWebhookSettings(source) };
}
