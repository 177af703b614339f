import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { BuilderError } from "./errors.js";

/**
 * API tokens. The operator configures `name:role:sha256hex` lines (API_TOKENS_FILE /
 * API_TOKENS); the token itself is shown once, when created, and stored nowhere. Tokens are
 * 256 random bits, so an unsalted SHA-256 is enough (no dictionary to attack).
 */
export const API_TOKEN_ROLES = ["admin", "user"] as const;
export type ApiTokenRole = (typeof API_TOKEN_ROLES)[number];

export interface ApiTokenEntry {
  name: string;
  role: ApiTokenRole;
  /** sha256 of the token, 64 lowercase hex characters */
  sha256: string;
  /** when the token stops being accepted (ISO 8601, UTC); absent: it does not expire */
  expiresAt?: string;
}

/** Token names are recorded on builds (`submitter`) and used in rate-limit keys. */
export const API_TOKEN_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const HASH_PATTERN = /^[0-9a-f]{64}$/;

export function hashApiToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}

/** A new token: `m1l0_` + 43 base64url characters (32 random bytes). */
export function generateApiToken(): string {
  return `m1l0_${randomBytes(32).toString("base64url")}`;
}

export function formatApiTokenLine(entry: ApiTokenEntry): string {
  return `${entry.name}:${entry.role}:${entry.sha256}${entry.expiresAt ? `:${entry.expiresAt}` : ""}`;
}

// an expiry as written in a token line: a UTC date, or a UTC date and time to the second
const EXPIRY_PATTERN = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z)?$/;
const DURATION_PATTERN = /^(\d{1,6})([smhdw])$/;
const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 } as const;

/**
 * `--expires` as the CLI takes it: a duration from `now` (`30d`, `12h`, `90m`, `2w`, `3600s`)
 * or a UTC date (`2027-01-31`, `2027-01-31T12:00:00Z`). Returns the ISO instant.
 */
export function parseTokenExpiry(text: string, now: Date = new Date()): string {
  const duration = DURATION_PATTERN.exec(text.trim());
  if (duration) {
    const ms = Number(duration[1]) * UNIT_MS[duration[2] as keyof typeof UNIT_MS];
    if (ms <= 0) throw expiryError("must be a positive duration");
    return new Date(now.getTime() + ms).toISOString().replace(/\.000Z$/, "Z");
  }
  if (!EXPIRY_PATTERN.test(text.trim())) throw expiryError("must be a duration such as 30d, 12h, 90m, 2w, or a UTC date such as 2027-01-31 or 2027-01-31T12:00:00Z");
  const at = new Date(text.trim().length === 10 ? `${text.trim()}T00:00:00Z` : text.trim());
  if (Number.isNaN(at.getTime())) throw expiryError("is not a valid date");
  if (at.getTime() <= now.getTime()) throw expiryError("is in the past");
  return at.toISOString().replace(/\.000Z$/, "Z");
}

function expiryError(message: string): BuilderError {
  return new BuilderError("VALIDATION_FAILED", `token expiry: ${message}`, { issues: [{ field: "expires", message }] });
}

/** True once `entry` has expired at `now`. */
export function apiTokenExpired(entry: ApiTokenEntry, now: number = Date.now()): boolean {
  return entry.expiresAt !== undefined && Date.parse(entry.expiresAt) <= now;
}

/** Creates a token and the line the operator adds to the tokens file. */
export function createApiToken(name: string, role: ApiTokenRole, options: { expiresAt?: string } = {}): { token: string; entry: ApiTokenEntry; line: string } {
  if (!API_TOKEN_NAME_PATTERN.test(name)) {
    throw new BuilderError("VALIDATION_FAILED", "token name: must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", {
      issues: [{ field: "name", message: "must be 1 to 64 letters, digits, '_', '.' or '-'" }],
    });
  }
  if (!(API_TOKEN_ROLES as readonly string[]).includes(role)) {
    throw new BuilderError("VALIDATION_FAILED", `token role: must be one of ${API_TOKEN_ROLES.join(", ")}`, { issues: [{ field: "role", message: `must be one of ${API_TOKEN_ROLES.join(", ")}` }] });
  }
  const token = generateApiToken();
  const entry: ApiTokenEntry = { name, role, sha256: hashApiToken(token), ...(options.expiresAt ? { expiresAt: options.expiresAt } : {}) };
  return { token, entry, line: formatApiTokenLine(entry) };
}

/**
 * Parses token entries (`name:role:sha256hex` or `name:role:sha256hex:<expiry>`, the expiry a
 * UTC date `2027-01-31` or instant `2027-01-31T12:00:00Z`; one or more a line separated by commas or
 * spaces; blank lines and `#` comments ignored). `where`
 * names the source in errors. Names and hashes must be unique. Never echoes a line back
 * (an operator might have pasted a raw token by mistake).
 */
export function parseApiTokenLines(text: string, where: string): ApiTokenEntry[] {
  const entries: ApiTokenEntry[] = [];
  text.split(/\r?\n/).forEach((raw, index) => {
    // `#` starts a comment; a line may hold several entries separated by commas or spaces
    for (const item of raw.replace(/#.*$/, "").split(/[\s,]+/)) {
      if (item) entries.push(parseEntry(item, `${where}: line ${index + 1}`, entries));
    }
  });
  return entries;
}

function parseEntry(item: string, where: string, seen: readonly ApiTokenEntry[]): ApiTokenEntry {
  const fail = (message: string): never => {
    throw new BuilderError("VALIDATION_FAILED", `${where}: ${message} (expected name:role:sha256hex, see \`m1l0 token create\`)`);
  };
  const [name = "", role = "", sha256 = "", ...rest] = item.split(":");
  // the expiry is everything after the hash (an ISO time has colons of its own)
  const expiry = rest.join(":");
  if (rest.length > 0 && !EXPIRY_PATTERN.test(expiry)) fail("the fourth field, the expiry, must be a UTC date (2027-01-31) or time (2027-01-31T12:00:00Z)");
  const expiresAt = rest.length > 0 ? new Date(expiry.length === 10 ? `${expiry}T00:00:00Z` : expiry) : undefined;
  if (expiresAt && Number.isNaN(expiresAt.getTime())) fail("the expiry is not a valid date");
  if (!API_TOKEN_NAME_PATTERN.test(name)) fail("the name must be 1 to 64 letters, digits, '_', '.' or '-'");
  if (!(API_TOKEN_ROLES as readonly string[]).includes(role)) fail(`the role must be one of ${API_TOKEN_ROLES.join(", ")}`);
  const hash = sha256.toLowerCase();
  if (!HASH_PATTERN.test(hash)) fail("the hash must be 64 hex characters (the sha256 of the token, never the token itself)");
  if (seen.some((entry) => entry.name === name)) fail(`the name ${name} is used twice`);
  if (seen.some((entry) => entry.sha256 === hash)) fail("the same token hash is listed twice");
  return { name, role: role as ApiTokenRole, sha256: hash, ...(expiresAt ? { expiresAt: expiresAt.toISOString().replace(/\.000Z$/, "Z") } : {}) };
}

/**
 * Finds the entry whose hash matches the presented token. Every configured hash is compared,
 * each in constant time, with no early exit: timing tells neither whether nor which token matched.
 */
export function matchApiToken(entries: readonly ApiTokenEntry[], presented: string): ApiTokenEntry | undefined {
  const digest = createHash("sha256").update(presented, "utf8").digest();
  let match: ApiTokenEntry | undefined;
  for (const entry of entries) {
    const equal = timingSafeEqual(digest, Buffer.from(entry.sha256, "hex"));
    // no branch on `equal` that skips work: the loop always visits every entry
    match = equal ? entry : match;
  }
  return match;
}
