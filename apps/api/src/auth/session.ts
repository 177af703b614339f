import { BuilderError, type ApiTokenRole } from "@m1l0/config";
import type { Redis } from "ioredis";
import { createHash, randomBytes } from "node:crypto";
import type { Principal } from "./principal.js";

/** The dashboard's session cookie: sent only to /admin (the dashboard and its sign-out). */
export const SESSION_COOKIE = "m1l0_dashboard";
export const SESSION_COOKIE_PATH = "/admin";

export interface DashboardSessionOptions {
  /** key namespace (REDIS_KEY_PREFIX), shared by API replicas */
  prefix: string;
  /** lifetime of a session from sign-in; fixed, not sliding */
  ttlSeconds: number;
}

interface StoredSession {
  name: string;
  role: ApiTokenRole;
  createdAt: string;
}

const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

/**
 * Browser sessions for the dashboard, one Redis key per session with the session's lifetime as
 * its TTL, so every API replica sees the same sessions and sign-out is immediate. The cookie
 * carries 256 random bits, never the API token; Redis stores only the sha256 of that id (a
 * copy of Redis does not hand out live cookies) and the token's name and role.
 */
export class DashboardSessions {
  constructor(
    private readonly redis: Redis,
    readonly options: DashboardSessionOptions,
  ) {
    if (!Number.isInteger(options.ttlSeconds) || options.ttlSeconds < 1) throw new Error("dashboard session ttlSeconds must be a positive integer");
  }

  /** The Redis key of a session id (exposed for tests and operators: it holds the id's hash). */
  key(sessionId: string): string {
    return `${this.options.prefix}dashboard-session:${createHash("sha256").update(sessionId).digest("hex")}`;
  }

  /** Starts a session for an admin principal; returns the cookie value. */
  async create(principal: Principal): Promise<string> {
    if (principal.role !== "admin") throw new BuilderError("FORBIDDEN", "the dashboard needs an admin token");
    const id = randomBytes(32).toString("base64url");
    const stored: StoredSession = { name: principal.name, role: principal.role, createdAt: new Date().toISOString() };
    await this.redis.set(this.key(id), JSON.stringify(stored), "EX", this.options.ttlSeconds);
    return id;
  }

  /** The session's principal, or undefined (unknown, expired, signed out, malformed). */
  async lookup(sessionId: string | undefined): Promise<Principal | undefined> {
    if (sessionId === undefined || !SESSION_ID.test(sessionId)) return undefined;
    const raw = await this.redis.get(this.key(sessionId));
    if (!raw) return undefined;
    try {
      const stored = JSON.parse(raw) as StoredSession;
      return { name: stored.name, role: stored.role };
    } catch {
      return undefined;
    }
  }

  async destroy(sessionId: string | undefined): Promise<void> {
    if (sessionId === undefined || !SESSION_ID.test(sessionId)) return;
    await this.redis.del(this.key(sessionId));
  }
}

/** The value of one cookie in a Cookie header (first occurrence), undefined when absent. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * The Set-Cookie value for a session (or its removal with `value: undefined`): HttpOnly (no
 * script reads it), SameSite=Strict (no cross-site request carries it), Path=/admin (never
 * sent to the build API), Secure on HTTPS.
 */
export function sessionCookie(value: string | undefined, options: { maxAgeSeconds: number; secure: boolean }): string {
  const attributes = [`${SESSION_COOKIE}=${value ?? ""}`, `Path=${SESSION_COOKIE_PATH}`, "HttpOnly", "SameSite=Strict"];
  attributes.push(value === undefined ? "Max-Age=0" : `Max-Age=${options.maxAgeSeconds}`);
  if (options.secure) attributes.push("Secure");
  return attributes.join("; ");
}
