import { BuilderError } from "@m1l0/config";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { requireAdmin, type Authenticator } from "../auth/principal.js";
import { SESSION_COOKIE, readCookie, sessionCookie, type DashboardSessions } from "../auth/session.js";
import { DASHBOARD_PATH } from "./dashboard.js";

export const SIGN_IN_PATH = "/admin/login";
export const SIGN_OUT_PATH = "/admin/logout";

export interface SignInOptions {
  authenticator: Authenticator;
  sessions: DashboardSessions;
  /** mark the cookie Secure even on plain HTTP (TLS ends at a proxy in front of the API) */
  secureCookie: boolean;
}

const FORM_TYPE = "application/x-www-form-urlencoded";

/**
 * The dashboard's sign-in: GET shows a token form, POST checks the token (admin tokens only)
 * and sets the session cookie (auth/session.ts); sign-out ends the session. These routes are
 * public (config.auth below): they are how a browser gets credentials in the first place.
 */
export async function registerSignIn(app: FastifyInstance, options: SignInOptions): Promise<void> {
  const { authenticator, sessions } = options;
  const open = { config: { auth: { access: "public" as const } } };
  const secure = (request: FastifyRequest) => options.secureCookie || request.protocol === "https";

  // an encapsulated scope, so the form parser exists only for these routes
  await app.register(async (scope) => {
    scope.addContentTypeParser(FORM_TYPE, { parseAs: "string", bodyLimit: 8 * 1024 }, (_request, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });

    scope.get<{ Querystring: { next?: string; "signed-out"?: string } }>(SIGN_IN_PATH, open, async (request, reply) => {
      if (authenticator.disabled) return reply.redirect(DASHBOARD_PATH, 303);
      return sendPage(reply, 200, signInPage({ next: safeNext(request.query.next), ...(request.query["signed-out"] ? { notice: "You are signed out." } : {}) }));
    });

    scope.post<{ Body: Record<string, string> | undefined }>(SIGN_IN_PATH, open, async (request, reply) => {
      const next = safeNext(request.body?.next);
      const crossSite = crossSiteReason(request);
      if (crossSite) return sendPage(reply, 403, signInPage({ next, error: `Sign-in refused: ${crossSite}.` }));
      if (authenticator.disabled) return reply.redirect(next, 303);
      const token = typeof request.body?.token === "string" ? request.body.token.trim() : "";
      let principal;
      try {
        principal = authenticator.authenticate(`Bearer ${token}`);
        requireAdmin(principal);
      } catch (error) {
        if (!(error instanceof BuilderError)) throw error;
        // the answer never repeats what was typed
        const message = error.code === "FORBIDDEN" ? "This token is not an admin token: the dashboard needs one." : "That is not a valid API token.";
        return sendPage(reply, error.code === "FORBIDDEN" ? 403 : 401, signInPage({ next, error: message }));
      }
      const sessionId = await sessions.create(principal);
      request.log.info({ token: principal.name }, "dashboard sign-in");
      reply.header("set-cookie", sessionCookie(sessionId, { maxAgeSeconds: sessions.options.ttlSeconds, secure: secure(request) }));
      return reply.redirect(next, 303);
    });

    // GET for the dashboard's "Sign out" link: the cookie is SameSite=Strict, so another site's
    // link arrives without it and ends nothing; POST also checks where the form came from
    const signOut = async (request: FastifyRequest, reply: FastifyReply) => {
      if (request.method === "POST" && crossSiteReason(request)) return sendPage(reply, 403, signInPage({ next: DASHBOARD_PATH, error: "Sign-out refused: the request came from another site." }));
      const sessionId = readCookie(request.headers.cookie, SESSION_COOKIE);
      if (sessionId !== undefined) {
        await sessions.destroy(sessionId);
        reply.header("set-cookie", sessionCookie(undefined, { maxAgeSeconds: 0, secure: secure(request) }));
      }
      return reply.redirect(`${SIGN_IN_PATH}?signed-out=1`, 303);
    };
    // no HEAD twin: a HEAD request (a link checker, a prefetch) must not end a session
    scope.get(SIGN_OUT_PATH, { ...open, exposeHeadRoute: false }, signOut);
    scope.post(SIGN_OUT_PATH, open, signOut);
  });
}

/**
 * Why a state-changing form post is refused, or undefined when it came from this very origin.
 * SameSite=Strict already keeps the cookie off cross-site requests; this stops login CSRF
 * (another site signing a browser in as someone else) and keeps the check where it belongs.
 */
function crossSiteReason(request: FastifyRequest): string | undefined {
  const fetchSite = request.headers["sec-fetch-site"];
  if (fetchSite !== undefined && fetchSite !== "same-origin") return "the form was sent from another site";
  const origin = request.headers.origin ?? request.headers.referer;
  if (!origin || origin === "null") return "the browser did not say where the form came from (Origin)";
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    return "the Origin header is malformed";
  }
  // the host only: behind a TLS proxy the scheme the API sees differs from the browser's
  return host === request.headers.host ? undefined : "the form was sent from another site";
}

/** Where to go after signing in: a dashboard path on this host, nothing else (no open redirect). */
export function safeNext(next: string | undefined): string {
  if (!next) return DASHBOARD_PATH;
  let url: URL;
  try {
    url = new URL(next, "http://dashboard.invalid");
  } catch {
    return DASHBOARD_PATH;
  }
  const path = url.pathname;
  if (url.origin !== "http://dashboard.invalid" || !(path === DASHBOARD_PATH || path.startsWith(`${DASHBOARD_PATH}/`)) || next.includes("\\")) return DASHBOARD_PATH;
  return `${path}${url.search}`;
}

function sendPage(reply: FastifyReply, status: number, html: string) {
  return reply
    .status(status)
    .header("content-type", "text/html; charset=utf-8")
    .header("cache-control", "no-store")
    .header("x-frame-options", "DENY")
    .header("referrer-policy", "same-origin")
    // no script at all on this page; the form may post only here
    .header("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    .send(html);
}

const escapeHtml = (text: string) => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function signInPage(options: { next: string; error?: string; notice?: string }): string {
  const error = options.error ? `<p class="error" role="alert">${escapeHtml(options.error)}</p>` : options.notice ? `<p role="status">${escapeHtml(options.notice)}</p>` : "";
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Sign in · M1L0 builds</title>
<style>
body { font-family: system-ui, sans-serif; background: #f3f4f6; color: #1f2937; display: flex; justify-content: center; padding-top: 12vh; margin: 0; }
main { background: #fff; border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.12); padding: 2rem 2.5rem; width: 26rem; }
h1 { font-size: 1.3rem; margin: 0 0 1rem; }
label { display: block; font-weight: 600; margin-bottom: .4rem; }
input[type=password] { width: 100%; box-sizing: border-box; padding: .55rem; font: inherit; border: 1px solid #9ca3af; border-radius: 4px; }
button { margin-top: 1rem; padding: .55rem 1.2rem; font: inherit; background: #0f766e; color: #fff; border: 0; border-radius: 4px; cursor: pointer; }
.error { color: #b91c1c; } .hint { color: #6b7280; font-size: .85rem; }
</style>
</head>
<body>
<main>
<h1>M1L0 builds dashboard</h1>
${error}
<form method="post" action="${SIGN_IN_PATH}">
<label for="token">Admin API token</label>
<input type="password" id="token" name="token" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="${escapeHtml(options.next)}">
<button type="submit">Sign in</button>
</form>
<p class="hint">The token stays on this server; your browser keeps a short-lived session cookie instead.</p>
</main>
</body>
</html>
`;
}
