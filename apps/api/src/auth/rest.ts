import { BuilderError } from "@m1l0/config";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { ANONYMOUS_ADMIN, requireAdmin, type Authenticator, type Principal } from "./principal.js";

/** Who may call a route: anyone (health), any valid token, or an admin token. */
export type RouteAccess = "public" | "user" | "admin";

export interface RouteAuth {
  access: RouteAccess;
  /**
   * Also accept HTTP Basic with the token as the password, for pages a browser opens
   * (dashboard, docs): browsers cannot send bearer headers. Only on GET-only pages, so a
   * browser's remembered credentials cannot be replayed against POST/DELETE (CSRF).
   */
  allowBasic: boolean;
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
  /** path prefixes of browser pages that require an admin token (the dashboard) */
  adminPages: readonly string[];
  /** path prefixes of browser pages any valid token may open (the API docs) */
  userPages: readonly string[];
  /** Prometheus metrics path: admin token (bearer or basic) unless `metricsPublic` */
  metricsPath: string;
  metricsPublic: boolean;
}

/** The default for every route, including ones added later: a valid bearer token. */
const DEFAULT_AUTH: RouteAuth = { access: "user", allowBasic: false };

const registries = new WeakMap<FastifyInstance, RegisteredRoute[]>();

/** Every route registered after registerAuth, with the auth it got (tests walk this table). */
export function registeredRoutes(app: FastifyInstance): readonly RegisteredRoute[] {
  return registries.get(app) ?? [];
}

const underPrefix = (url: string, prefix: string) => url === prefix || url.startsWith(prefix.endsWith("/") ? prefix : `${prefix}/`);

/**
 * Authentication for every route: must run before any route or plugin is added. Each route
 * gets an auth policy (its own `config.auth`, else by path: dashboard admin, docs user,
 * metrics admin, everything else a bearer token); one onRequest hook enforces it, so a route
 * someone adds later is closed unless it says otherwise. Unknown paths need a token too (no
 * route discovery without one).
 */
export function registerRestAuth(app: FastifyInstance, authenticator: Authenticator, options: RestAuthOptions): void {
  const routes: RegisteredRoute[] = [];
  registries.set(app, routes);
  app.decorateRequest("principal", null as unknown as Principal);

  app.addHook("onRoute", (route) => {
    const url = route.url ?? route.path;
    for (const method of Array.isArray(route.method) ? route.method : [route.method]) {
      // Basic only for reads: a browser replays remembered Basic credentials cross-site (CSRF)
      const readOnly = method === "GET" || method === "HEAD";
      let auth: RouteAuth;
      if (route.config?.auth?.access) auth = { ...DEFAULT_AUTH, ...route.config.auth } as RouteAuth;
      else if (options.adminPages.some((prefix) => underPrefix(url, prefix))) auth = { access: "admin", allowBasic: readOnly };
      else if (options.userPages.some((prefix) => underPrefix(url, prefix))) auth = { access: "user", allowBasic: readOnly };
      else if (url === options.metricsPath) auth = options.metricsPublic ? { access: "public", allowBasic: false } : { access: "admin", allowBasic: readOnly };
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
    try {
      const principal = authenticator.authenticate(request.headers.authorization, { allowBasic: auth.allowBasic });
      if (auth.access === "admin") requireAdmin(principal);
      request.principal = principal;
    } catch (error) {
      if (!(error instanceof BuilderError)) throw error;
      if (error.code === "UNAUTHENTICATED") {
        // a browser page gets the Basic challenge, so the browser asks for (or sends) the token
        reply.header("www-authenticate", auth.allowBasic ? 'Basic realm="m1l0", charset="UTF-8"' : 'Bearer realm="m1l0"');
      }
      // answered here, not thrown: plugins (bull-board) have error handlers of their own
      return reply.status(error.httpStatus).send({ error: error.toJSON() });
    }
  });
}

function routeAuth(request: FastifyRequest): RouteAuth {
  const byMethod = (request.routeOptions.config as { authByMethod?: Record<string, RouteAuth> } | undefined)?.authByMethod;
  return byMethod?.[request.method] ?? DEFAULT_AUTH;
}
