import { BuilderError, apiTokenExpired, matchApiToken, type ApiTokenEntry, type ApiTokenRole, type BuildRecord } from "@m1l0/config";

/** Who is calling: the name and role of the token presented (never the token). */
export interface Principal {
  name: string;
  role: ApiTokenRole;
  /** true only when the operator disabled authentication (AUTH_DISABLED=true) */
  anonymous?: true;
}

/** The caller every request is when authentication is disabled: an admin, with no name recorded on builds. */
export const ANONYMOUS_ADMIN: Principal = { name: "anonymous", role: "admin", anonymous: true };

const BEARER = /^Bearer[ ]+([\x21-\x7e]+)[ ]*$/i;
const BASIC = /^Basic[ ]+([A-Za-z0-9+/=]+)[ ]*$/i;

/** How the credential may be presented: `Bearer <token>` always; `Basic` (token as password) on browser routes. */
export interface CredentialOptions {
  allowBasic?: boolean;
}

/**
 * Checks presented credentials against the operator's token hashes. Disabled (no tokens,
 * AUTH_DISABLED=true) every caller is ANONYMOUS_ADMIN. The entries can be replaced while
 * serving (`replace`, from the tokens-file watcher): every check reads the current set.
 */
export class Authenticator {
  private constructor(
    private entries: readonly ApiTokenEntry[],
    readonly disabled: boolean,
  ) {}

  /** Swaps in a new token set (a reloaded API_TOKENS_FILE); the next request is checked against it. */
  replace(entries: readonly ApiTokenEntry[]): void {
    if (this.disabled) throw new Error("authentication is disabled: there are no tokens to replace");
    if (entries.length === 0) throw new Error("authentication needs at least one token (or disable it explicitly)");
    this.entries = entries;
  }

  static withTokens(entries: readonly ApiTokenEntry[]): Authenticator {
    if (entries.length === 0) throw new Error("authentication needs at least one token (or disable it explicitly)");
    return new Authenticator(entries, false);
  }

  static disabled(): Authenticator {
    return new Authenticator([], true);
  }

  get tokenCount(): number {
    return this.entries.length;
  }

  /** The role the token named `name` has now (undefined once it is gone from the configuration or expired). */
  roleOf(name: string): ApiTokenRole | undefined {
    const entry = this.entries.find((candidate) => candidate.name === name);
    return entry && !apiTokenExpired(entry) ? entry.role : undefined;
  }

  /** The token carried by an Authorization header value (Bearer, or Basic when allowed); UNAUTHENTICATED otherwise. */
  extractToken(header: string | undefined, options: CredentialOptions = {}): string {
    const scheme = options.allowBasic ? "Bearer <token> (or HTTP Basic with the token as the password)" : "Bearer <token>";
    if (header === undefined || header.trim() === "") {
      throw new BuilderError("UNAUTHENTICATED", `an API token is required: send Authorization: ${scheme}`);
    }
    const bearer = BEARER.exec(header);
    if (bearer) return bearer[1]!;
    const basic = options.allowBasic ? BASIC.exec(header) : null;
    if (basic) {
      const decoded = Buffer.from(basic[1]!, "base64").toString("utf8");
      const colon = decoded.indexOf(":");
      const password = colon === -1 ? "" : decoded.slice(colon + 1);
      if (password) return password;
    }
    throw new BuilderError("UNAUTHENTICATED", `malformed Authorization header: expected ${scheme}`);
  }

  /** The caller, or UNAUTHENTICATED (missing, malformed or unknown token; the message never repeats the token). */
  authenticate(header: string | undefined, options: CredentialOptions = {}): Principal {
    if (this.disabled) return ANONYMOUS_ADMIN;
    const token = this.extractToken(header, options);
    const entry = matchApiToken(this.entries, token);
    if (!entry) throw new BuilderError("UNAUTHENTICATED", "invalid API token");
    // the caller holds this token, so naming it and its expiry tells nothing new
    if (apiTokenExpired(entry)) throw new BuilderError("UNAUTHENTICATED", `API token ${entry.name} expired at ${entry.expiresAt}; ask the operator for a new one`);
    return { name: entry.name, role: entry.role };
  }
}

export function requireAdmin(principal: Principal): void {
  if (principal.role !== "admin") throw new BuilderError("FORBIDDEN", "this needs an admin token");
}

/** Admins see every build; a user token only the builds it submitted. */
export function canAccess(principal: Principal, record: Pick<BuildRecord, "submitter">): boolean {
  return principal.role === "admin" || (record.submitter !== undefined && record.submitter === principal.name);
}

/** What a build submitted by `principal` records as its submitter (nothing when auth is disabled). */
export function submitterOf(principal: Principal): string | undefined {
  return principal.anonymous ? undefined : principal.name;
}
