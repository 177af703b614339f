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
  return `${entry.name}:${entry.role}:${entry.sha256}`;
}

/** Creates a token and the line the operator adds to the tokens file. */
export function createApiToken(name: string, role: ApiTokenRole): { token: string; entry: ApiTokenEntry; line: string } {
  if (!API_TOKEN_NAME_PATTERN.test(name)) {
    throw new BuilderError("VALIDATION_FAILED", "token name: must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", {
      issues: [{ field: "name", message: "must be 1 to 64 letters, digits, '_', '.' or '-'" }],
    });
  }
  if (!(API_TOKEN_ROLES as readonly string[]).includes(role)) {
    throw new BuilderError("VALIDATION_FAILED", `token role: must be one of ${API_TOKEN_ROLES.join(", ")}`, { issues: [{ field: "role", message: `must be one of ${API_TOKEN_ROLES.join(", ")}` }] });
  }
  const token = generateApiToken();
  const entry: ApiTokenEntry = { name, role, sha256: hashApiToken(token) };
  return { token, entry, line: formatApiTokenLine(entry) };
}

/**
 * Parses token entries (`name:role:sha256hex`, one or more a line separated by commas or
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
  const [name = "", role = "", sha256 = "", ...extra] = item.split(":");
  if (extra.length > 0) fail("too many ':' separated fields");
  if (!API_TOKEN_NAME_PATTERN.test(name)) fail("the name must be 1 to 64 letters, digits, '_', '.' or '-'");
  if (!(API_TOKEN_ROLES as readonly string[]).includes(role)) fail(`the role must be one of ${API_TOKEN_ROLES.join(", ")}`);
  const hash = sha256.toLowerCase();
  if (!HASH_PATTERN.test(hash)) fail("the hash must be 64 hex characters (the sha256 of the token, never the token itself)");
  if (seen.some((entry) => entry.name === name)) fail(`the name ${name} is used twice`);
  if (seen.some((entry) => entry.sha256 === hash)) fail("the same token hash is listed twice");
  return { name, role: role as ApiTokenRole, sha256: hash };
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
