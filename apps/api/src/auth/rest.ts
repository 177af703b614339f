import { BuilderError } from "@m1l0/config";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { ANONYMOUS_ADMIN, requireAdmin, type Authenticator, type Principal } from "./principal.js";
import { SESSION_COOKIE, readCookie, sessionCookie, type DashboardSessions } from "./session.js";

/** Who may call a route: anyone (health), any valid token, or an admin token. */
export type RouteAccess = "public" | "user" | "admin";

export interface RouteAuth {
  access: RouteAccess;
  /**
   * Also accept HTTP Basic with the token as the password, for pages a browser opens with its
   * own prompt (docs, metrics): browsers cannot send bearer headers. Only on GET-only pages, so a
   * browser's remembered credentials cannot be replayed against POST/DELETE (CSRF).
   */
  allowBasic: boolean;
  /**
   * Also accept the dashboard's session cookie (auth/session.ts). Only on the dashboard's
   * GET/HEAD routes: the dashboard is read-only, and a cookie must never open the build API.
   */
  allowSession: boolean;
}

export interface RegisteredRoute {
  method: string;
  url: string;
  auth: RouteAuth;
}

declare module "fastify" {
  interface FastifyRequest {
    /** set by the auth hook before any handler runs */
    principal: Principal;
  }
  interface FastifyContextConfig {
    auth?: Partial<RouteAuth> | undefined;
  }
}

export interface RestAuthOptions {
  /** path prefixes of browser pages that require an admin token and take the session cookie (the dashboard) */
  adminPages: readonly string[];
  /** path prefixes of browser pages any valid token may open (the API docs) */
  userPages: readonly string[];
  /** Prometheus metrics path: admin token (bearer or basic) unless `metricsPublic` */
  metricsPath: string;
  metricsPublic: boolean;
  /** the dashboard's sessions; without them no cookie is accepted anywhere */
  sessions?: DashboardSessions;
  /** where a browser without a session is sent (GET, Accept: text/html) on a session route */
  signInPath?: string;
}

/** The default for every route, including ones added later: a valid bearer token. */
const DEFAULT_AUTH: RouteAuth = { access: "user", allowBasic: false, allowSession: false };

const registries = new WeakMap<FastifyInstance, RegisteredRoute[]>();

/** Every route registered after registerAuth, with the auth it got (tests walk this table). */
export function registeredRoutes(app: FastifyInstance): readonly RegisteredRoute[] {
  return registries.get(app) ?? [];
}

const underPrefix = (url: string, prefix: string) => url === prefix || url.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`);

/**
 * Authentication for every route: must run before any route or plugin is added. Each route
 * gets an auth policy (its own `config.auth`, else by path: dashboard admin with the session
 * cookie on reads, docs user, metrics admin, everything else a bearer token); one onRequest
 * hook enforces it, so a route someone adds later is closed unless it says otherwise. Unknown
 * paths need a token too (no route discovery without one).
 */
export function registerRestAuth(app: FastifyInstance, authenticator: Authenticator, options: RestAuthOptions): void {
  const routes: RegisteredRoute[] = [];
  registries.set(app, routes);
  app.decorateRequest("principal", null as unknown as Principal);

  app.addHook("onRoute", (route) => {
    const url = route.url ?? route.path;
    for (const method of Array.isArray(route.method) ? route.method : [route.method]) {
      // browser credentials only for reads: a browser replays remembered Basic credentials cross-site (CSRF)
      const readOnly = method === "GET" || method === "HEAD";
      let auth: RouteAuth;
      if (route.config?.auth?.access) auth = { ...DEFAULT_AUTH, ...route.config.auth } as RouteAuth;
      // the dashboard: Bearer, or the session cookie its sign-in page sets (no Basic: a page whose
      // URL carries user:pass@ cannot fetch() its own data, and a Basic prompt would hide the form)
      else if (options.adminPages.some((prefix) => underPrefix(url, prefix))) auth = { access: "admin", allowBasic: false, allowSession: readOnly };
      else if (options.userPages.some((prefix) => underPrefix(url, prefix))) auth = { access: "user", allowBasic: readOnly, allowSession: false };
      else if (url === options.metricsPath) auth = options.metricsPublic ? { access: "public", allowBasic: false, allowSession: false } : { access: "admin", allowBasic: readOnly, allowSession: false };
      else auth = DEFAULT_AUTH;
      routes.push({ method, url, auth });
    }
    // one route object may serve several methods; the request hook picks the entry for its method
    const byMethod = Object.fromEntries(routes.filter((entry) => entry.url === url).map((entry) => [entry.method, entry.auth]));
    route.config = { ...route.config, auth: undefined, authByMethod: byMethod } as typeof route.config;
  });

  app.addHook("onRequest", async (request, reply) => {
    const auth = routeAuth(request);
    if (auth.access === "public") {
      request.principal = authenticator.disabled ? ANONYMOUS_ADMIN : { name: "public", role: "user" };
      return;
    }
    const sessionId = auth.allowSession && options.sessions ? readCookie(request.headers.cookie, SESSION_COOKIE) : undefined;
    try {
      let principal: Principal | undefined;
      // a Bearer header, when present, is what the caller means; the cookie stands in only without one
      if (sessionId !== undefined && !authenticator.disabled && request.headers.authorization === undefined) {
        principal = await sessionPrincipal(authenticator, options.sessions!, sessionId);
        if (!principal) {
          // expired or signed out elsewhere: drop the stale cookie along with the answer
          reply.header("set-cookie", sessionCookie(undefined, { maxAgeSeconds: 0, secure: request.protocol === "https" }));
          throw new BuilderError("UNAUTHENTICATED", "the dashboard session has expired or was signed out; sign in again");
        }
      }
      principal ??= authenticator.authenticate(request.headers.authorization, { allowBasic: auth.allowBasic });
      if (auth.access === "admin") requireAdmin(principal);
      request.principal = principal;
    } catch (error) {
      if (!(error instanceof BuilderError)) throw error;
      if (error.code === "UNAUTHENTICATED" && auth.allowSession && options.signInPath && wantsPage(request)) {
        // a person in a browser: to the sign-in form, and back here afterwards
        return reply.redirect(`${options.signInPath}?next=${encodeURIComponent(request.url)}`, 303);
      }
      if (error.code === "UNAUTHENTICATED") {
        // a browser page gets the Basic challenge, so the browser asks for (or sends) the token
        reply.header("www-authenticate", auth.allowBasic ? 'Basic realm="m1l0", charset="UTF-8"' : 'Bearer realm="m1l0"');
      }
      // answered here, not thrown: plugins (bull-board) have error handlers of their own
      return reply.status(error.httpStatus).send({ error: error.toJSON() });
    }
  });
}

/** The principal of a live session whose token is still an admin token in the configuration. */
async function sessionPrincipal(authenticator: Authenticator, sessions: DashboardSessions, sessionId: string): Promise<Principal | undefined> {
  const principal = await sessions.lookup(sessionId);
  // a token removed from the configuration (or demoted) ends its sessions at the next restart
  if (!principal || authenticator.roleOf(principal.name) !== principal.role) return undefined;
  return principal;
}

/** A browser navigating (not a script fetching JSON or a static file). */
function wantsPage(request: FastifyRequest): boolean {
  return (request.method === "GET" || request.method === "HEAD") && (request.headers.accept ?? "").includes("text/html");
}

function routeAuth(request: FastifyRequest): RouteAuth {
  const byMethod = (request.routeOptions.config as { authByMethod?: Record<string, RouteAuth> } | undefined)?.authByMethod;
  return byMethod?.[request.method] ?? DEFAULT_AUTH;
}
