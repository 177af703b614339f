import { readFileSync } from "node:fs";
import path from "node:path";
import { BuilderError, TERMINAL_STATUSES, envBoolean, envList, type BuildStatus, type FieldIssue } from "@m1l0/config";
import { NetworkGuard, type NetworkPolicy } from "@m1l0/source";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { WebhookSecret } from "./signature.js";

/** The statuses an endpoint may ask for; `*` is every one of them (every way a build ends). */
export const WEBHOOK_EVENTS = TERMINAL_STATUSES;
export const WEBHOOK_ENDPOINT_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export interface WebhookEndpoint {
  name: string;
  url: URL;
  /** signs deliveries; never serialised (JSON shows "[redacted]") */
  secret: WebhookSecret;
  events: ReadonlySet<BuildStatus>;
}

export interface WebhookSettings {
  endpoints: readonly WebhookEndpoint[];
  /** tries per delivery, the first included */
  attempts: number;
  /** delay before the first retry; doubles each time (BullMQ exponential backoff) */
  backoffMs: number;
  /** one attempt's whole deadline: connect, send, answer and body */
  timeoutMs: number;
  /** bytes of a receiver's answer read (kept for the history: the first 512); the rest is cut off */
  maxResponseBytes: number;
  /** delivery worker concurrency */
  concurrency: number;
  /** the host policy of webhook URLs, also applied to the address connected to */
  network: NetworkPolicy;
}

/** The worker's and API's webhook variables (documented in .env.example). */
export const webhookEnvSchema = z.object({
  /** YAML or JSON file listing the endpoints; unset = no webhooks */
  WEBHOOKS_FILE: z.string().optional(),
  WEBHOOK_ATTEMPTS: z.coerce.number().int().min(1).max(30).default(10),
  WEBHOOK_BACKOFF_MS: z.coerce.number().int().min(10).max(3_600_000).default(1000),
  WEBHOOK_TIMEOUT_SECONDS: z.coerce.number().min(0.1).max(300).default(10),
  WEBHOOK_MAX_RESPONSE_BYTES: z.coerce.number().int().min(0).max(10 * 1024 * 1024).default(64 * 1024),
  WEBHOOK_CONCURRENCY: z.coerce.number().int().min(1).max(256).default(8),
  /** http:// endpoints (default: https only) */
  WEBHOOK_ALLOW_HTTP: envBoolean(),
  /** let endpoints resolve to private/loopback addresses (cloud metadata stays refused) */
  WEBHOOK_ALLOW_PRIVATE_HOSTS: envBoolean(),
  /** host names, addresses or CIDRs endpoints may use although private, e.g. 10.1.2.3 or ci.internal */
  WEBHOOK_HOST_ALLOWLIST: envList(),
});
export type WebhookEnv = z.output<typeof webhookEnvSchema>;

const fileSchema = z.object({
  endpoints: z
    .array(
      z
        .object({
          name: z.string().regex(WEBHOOK_ENDPOINT_NAME, "must be 1 to 64 letters, digits, '_' or '-'"),
          url: z.string().min(1),
          /** a file holding the secret (preferred: the secret stays out of this file) */
          secretFile: z.string().min(1).optional(),
          secret: z.string().optional(),
          events: z.array(z.enum(["succeeded", "failed", "cancelled", "cached", "*"], "must be succeeded, failed, cancelled, cached or * (every one)")).min(1),
        })
        .strict(),
    )
    .max(50),
}).strict();

/**
 * The webhook settings from the environment, or undefined without WEBHOOKS_FILE. Every error
 * names the file and the field (`WEBHOOKS_FILE: endpoints[1].url: …`) and never shows a
 * secret. URLs must pass the same host policy as git sources, here and again on connect.
 * `readSecrets: false` (the API, which only enqueues) leaves the secret files unread.
 */
export function loadWebhookSettings(source: NodeJS.ProcessEnv, options: { readSecrets?: boolean; readFile?: (file: string) => string } = {}): WebhookSettings | undefined {
  const parsed = webhookEnvSchema.safeParse(source);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => ({ field: issue.path.join("."), message: issue.message }));
    throw configError(`invalid webhook settings: ${issues.map((i) => `${i.field}: ${i.message}`).join("; ")}`, issues);
  }
  const env = parsed.data;
  if (!env.WEBHOOKS_FILE) return undefined;
  const readFile = options.readFile ?? ((file: string) => readFileSync(file, "utf8"));
  const file = env.WEBHOOKS_FILE;
  const text = readOrFail(readFile, file, "WEBHOOKS_FILE");
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (cause) {
    throw configError(`WEBHOOKS_FILE: ${file} is neither YAML nor JSON: ${(cause as Error).message.split("\n")[0]}`, [{ field: "WEBHOOKS_FILE", message: "is not YAML or JSON" }]);
  }
  const result = fileSchema.safeParse(document);
  if (!result.success) {
    const issues = result.error.issues.map((issue) => ({ field: `WEBHOOKS_FILE: ${fieldPath(issue.path)}`, message: issue.message }));
    throw configError(issues.map((i) => `${i.field}: ${i.message}`).join("; "), issues);
  }
  const network: NetworkPolicy = { allowPrivateHosts: env.WEBHOOK_ALLOW_PRIVATE_HOSTS, hostAllowlist: env.WEBHOOK_HOST_ALLOWLIST };
  const guard = new NetworkGuard(network);
  const seen = new Set<string>();
  const endpoints = result.data.endpoints.map((entry, index): WebhookEndpoint => {
    const field = (name: string) => `WEBHOOKS_FILE: endpoints[${index}].${name}`;
    if (seen.has(entry.name)) throw configError(`${field("name")}: ${entry.name} is used twice`, [{ field: field("name"), message: "is used twice" }]);
    seen.add(entry.name);
    const url = checkUrl(entry.url, field("url"), env.WEBHOOK_ALLOW_HTTP, guard);
    if ((entry.secret === undefined) === (entry.secretFile === undefined)) {
      throw configError(`${field("secretFile")}: give exactly one of secretFile (preferred) or secret`, [{ field: field("secretFile"), message: "give exactly one of secretFile or secret" }]);
    }
    let secretText = entry.secret ?? "";
    if (entry.secretFile !== undefined && options.readSecrets !== false) {
      secretText = readOrFail(readFile, path.resolve(path.dirname(file), entry.secretFile), field("secretFile")).trim();
    }
    if (options.readSecrets !== false && secretText.length < 16) {
      throw configError(`${field(entry.secret === undefined ? "secretFile" : "secret")}: the secret must be at least 16 characters`, [{ field: field("secret"), message: "must be at least 16 characters" }]);
    }
    const events = new Set<BuildStatus>(entry.events.includes("*") ? WEBHOOK_EVENTS : (entry.events as BuildStatus[]));
    return { name: entry.name, url, secret: new WebhookSecret(secretText), events };
  });
  return {
    endpoints,
    attempts: env.WEBHOOK_ATTEMPTS,
    backoffMs: env.WEBHOOK_BACKOFF_MS,
    timeoutMs: Math.round(env.WEBHOOK_TIMEOUT_SECONDS * 1000),
    maxResponseBytes: env.WEBHOOK_MAX_RESPONSE_BYTES,
    concurrency: env.WEBHOOK_CONCURRENCY,
    network,
  };
}

function checkUrl(text: string, field: string, allowHttp: boolean, guard: NetworkGuard): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw configError(`${field}: not a URL`, [{ field, message: "not a URL" }]);
  }
  if (url.protocol !== "https:" && !(allowHttp && url.protocol === "http:")) {
    const message = allowHttp ? "must be an http:// or https:// URL" : "must be an https:// URL (WEBHOOK_ALLOW_HTTP=true allows http://)";
    throw configError(`${field}: ${message}`, [{ field, message }]);
  }
  if (url.username || url.password) throw configError(`${field}: must not carry credentials (the signature authenticates deliveries)`, [{ field, message: "must not carry credentials" }]);
  try {
    guard.checkUrlHost(url);
  } catch (cause) {
    // the guard speaks of sources; say it for webhooks, with the webhook allowlist
    const detail = (cause as Error).message.replace(/^source host (\S+) is not allowed: /, "").replace(/; builds may only fetch.*$/, "");
    const message = `host ${url.hostname} is not allowed: ${detail}; webhooks may only go to public addresses (an operator can allowlist it with WEBHOOK_HOST_ALLOWLIST)`;
    throw configError(`${field}: ${message}`, [{ field, message }], cause);
  }
  return url;
}

function readOrFail(readFile: (file: string) => string, file: string, field: string): string {
  try {
    return readFile(file);
  } catch (cause) {
    const why = (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
    throw configError(`${field}: cannot read ${file}: ${why}`, [{ field, message: `cannot read ${file}` }], cause);
  }
}

function fieldPath(parts: readonly PropertyKey[]): string {
  return parts.map((part, i) => (typeof part === "number" ? `[${part}]` : `${i === 0 ? "" : "."}${String(part)}`)).join("") || "(file)";
}

function configError(message: string, issues: FieldIssue[], cause?: unknown): BuilderError {
  return new BuilderError("VALIDATION_FAILED", message, { issues, ...(cause === undefined ? {} : { cause }) });
}
