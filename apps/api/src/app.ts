import rateLimit from "@fastify/rate-limit";
import { BUILD_STATUSES, BuilderError, decodeConfigText, isBuilderError, type BuildRecord, type BuildStatus } from "@m1l0/config";
import { isRedisUnavailableError, type BuildJobData, type BuildStore } from "@m1l0/queue";
import type { ArtifactStore } from "@m1l0/storage";
import type { Queue } from "bullmq";
import Fastify, { LogController, type FastifyInstance, type FastifyServerOptions } from "fastify";
import type { Redis } from "ioredis";
import { BuildHistory, DASHBOARD_PATH, DOCS_PATH, SIGN_IN_PATH, SIGN_OUT_PATH, archivedEvents, createApiMetrics, decodeCursor, encodeCursor, registerApiDocs, registerDashboard, registerMetricsRoute, registerSignIn } from "./admin/index.js";
import { canAccess, submitterOf, type Authenticator, type Principal } from "./auth/principal.js";
import { rateLimitStore, type SubmissionRateLimiter } from "./auth/rate-limit.js";
import { registerRestAuth } from "./auth/rest.js";
import { DashboardSessions } from "./auth/session.js";
import type { BuildService } from "./builds.js";
import { isDeliveryCursor, type BuildNotifier, type WebhookDeliveryStore } from "@m1l0/webhooks";

export interface AppDeps {
  builds: BuildService;
  store: BuildStore;
  redis: Redis;
  bodyLimit?: number;
  logger?: FastifyServerOptions["logger"];
  /** the build queue: enables the dashboard (/admin/queues) and queue metrics (/metrics) */
  queue?: Queue<BuildJobData>;
  /** archived logs and records (S3 or a local folder), served once Redis no longer has them */
  artifacts?: ArtifactStore;
  /** checks API tokens on every route but /healthz and /readyz (Authenticator.disabled() only when the operator says so) */
  auth: Authenticator;
  /** per-token budget for POST /builds (shared with gRPC Build); unlimited when absent or auth is disabled */
  rateLimiter?: SubmissionRateLimiter;
  /** leave /metrics open (default: admin token) */
  metricsPublic?: boolean;
  /** the dashboard's browser sessions (default: in `redis` under `m1l0:`, one hour) */
  sessions?: DashboardSessions;
  /** mark the session cookie Secure on plain HTTP too (TLS ends at a proxy) */
  secureCookie?: boolean;
  /** the webhook delivery history: GET /webhooks/deliveries (admin) */
  webhookDeliveries?: WebhookDeliveryStore;
  /** told when a queued build is cancelled here (it never reaches a worker's finishBuild) */
  notifier?: Pick<BuildNotifier, "buildEnded">;
  /** serve HTTPS with this certificate chain and key (PEM); plain HTTP without */
  https?: { cert: Buffer; key: Buffer };
}

const YAML_TYPES = ["application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"];

function links(id: string) {
  return { self: `/builds/${id}`, logs: `/builds/${id}/logs`, follow: `/builds/${id}/logs?follow=1` };
}

/** The REST API as a plugin-style factory; the server process (server.ts) only listens. */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  // One access-log line per request (Fastify's default is two), written when the answer is known.
  const app = Fastify({ logger: deps.logger ?? false, bodyLimit: deps.bodyLimit ?? 256 * 1024,
    logController: new LogController({ disableRequestLogging: true }),
    ...(deps.https ? { https: deps.https } : {}),
  }) as unknown as FastifyInstance; // the HTTPS server type differs only in the raw server
  app.addHook("onResponse", (request, reply, done) => {
    const level = reply.statusCode >= 500 ? "error" : "info";
    request.log[level]({ method: request.method, url: request.url, statusCode: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 }, "request");
    done();
  });
  const history = new BuildHistory(deps.store, deps.artifacts);
  const sessions = deps.sessions ?? new DashboardSessions(deps.redis, { prefix: "m1l0:", ttlSeconds: 3600 });
  // first of all: every route added from here on gets an auth policy
  registerRestAuth(app, deps.auth, {
    adminPages: [DASHBOARD_PATH],
    userPages: [DOCS_PATH],
    metricsPath: "/metrics",
    metricsPublic: deps.metricsPublic ?? false,
    ...(deps.queue ? { sessions, signInPath: SIGN_IN_PATH } : {}),
  });
  const limiter = deps.rateLimiter?.enabled && !deps.auth.disabled ? deps.rateLimiter : undefined;
  if (limiter) {
    await app.register(rateLimit, {
      global: false,
      hook: "onRequest", // after authentication (root hooks run first), before the body is parsed
      store: rateLimitStore(limiter) as never,
      keyGenerator: (request) => request.principal.name,
      errorResponseBuilder: (_request, context) =>
        new BuilderError("RATE_LIMITED", `build submission limit reached for this token (${context.max} per ${limiter.settings.windowMs / 1000} s); retry in ${context.after}`),
    });
  }
  // before the routes: the OpenAPI document is collected as routes are added
  await registerApiDocs(app);

  /** The build if this caller may see it; another token's build is 404, exactly like a missing one. */
  const visible = async (principal: Principal, id: string): Promise<BuildRecord> => {
    const record = await history.get(id);
    if (!record || !canAccess(principal, record)) throw new BuilderError("NOT_FOUND", `build ${id} not found`);
    return record;
  };

  app.addContentTypeParser(YAML_TYPES, { parseAs: "string" }, (_request, body, done) => {
    try {
      done(null, decodeConfigText(body as string));
    } catch (error) {
      done(error as Error, undefined);
    }
  });

  app.setErrorHandler((error, request, reply) => {
    if (isBuilderError(error)) {
      const status = error.httpStatus;
      if (status >= 500) request.log.error({ err: error, cause: error.cause }, error.message);
      return reply.status(status).send({ error: error.toJSON() });
    }
    const fastifyError = error as { statusCode?: number; code?: string; message: string };
    if (fastifyError.statusCode && fastifyError.statusCode < 500) {
      const code = fastifyError.code === "FST_ERR_CTP_BODY_TOO_LARGE" ? "VALIDATION_FAILED" : "VALIDATION_FAILED";
      return reply.status(fastifyError.statusCode).send({
        error: { code, message: fastifyError.message, issues: [{ field: "(body)", message: fastifyError.message }] },
      });
    }
    if (isRedisUnavailableError(error)) {
      // Redis outage: a prompt, retryable answer; the connection recovers by itself
      return reply.status(503).send({ error: { code: "QUEUE_UNAVAILABLE", message: "the build store is unavailable; try again shortly" } });
    }
    request.log.error({ err: error }, "unhandled error");
    return reply.status(500).send({ error: { code: "INTERNAL", message: "internal error" } });
  });

  const open = { config: { auth: { access: "public" as const } } };
  app.get("/healthz", open, async () => ({ status: "ok" }));
  app.get("/readyz", open, async (_request, reply) => {
    try {
      await deps.redis.ping();
      return { status: "ready" };
    } catch {
      return reply.status(503).send({ status: "unavailable", reason: "redis unreachable" });
    }
  });

  const submitLimit = limiter ? { config: { rateLimit: { max: limiter.settings.max, timeWindow: limiter.settings.windowMs } } } : {};
  app.post("/builds", submitLimit, async (request, reply) => {
    const idempotencyKey = request.headers["idempotency-key"];
    const submitter = submitterOf(request.principal);
    const { record, created, attached } = await deps.builds.submit(request.body, {
      ...(typeof idempotencyKey === "string" ? { idempotencyKey } : {}),
      ...(submitter !== undefined ? { submitter } : {}),
    });
    // 202: a new build was queued; 200: an existing build answers (Idempotency-Key, or attached to an identical one in flight)
    return reply.status(created ? 202 : 200).send({ id: record.id, status: record.status, ...(attached ? { attached: true } : {}), links: links(record.id) });
  });

  app.get<{ Querystring: { status?: string; limit?: string; cursor?: string } }>("/builds", async (request) => {
    const { status, limit, cursor } = request.query;
    if (status !== undefined && !(BUILD_STATUSES as readonly string[]).includes(status)) {
      throw new BuilderError("VALIDATION_FAILED", `status must be one of ${BUILD_STATUSES.join(", ")}`, {
        issues: [{ field: "status", message: `must be one of ${BUILD_STATUSES.join(", ")}` }],
      });
    }
    const parsedLimit = limit === undefined ? 50 : Number(limit);
    if (!Number.isInteger(parsedLimit) || parsedLimit < 1 || parsedLimit > 500) {
      throw new BuilderError("VALIDATION_FAILED", "limit must be an integer from 1 to 500", { issues: [{ field: "limit", message: "must be an integer from 1 to 500" }] });
    }
    const after = cursor === undefined ? undefined : decodeCursor(cursor);
    // a user token lists its own builds; an admin token every build
    const own = request.principal.role === "admin" ? {} : { submitter: request.principal.name };
    const page = await history.page({ limit: parsedLimit, ...own, ...(status ? { status: status as BuildStatus } : {}), ...(after ? { after } : {}) });
    return { builds: page.builds, nextCursor: page.next ? encodeCursor(page.next) : null };
  });

  app.get<{ Params: { id: string } }>("/builds/:id", async (request) => {
    const record = await visible(request.principal, request.params.id);
    return { ...record, links: links(record.id) };
  });

  // 202: accepted; a running build stops on its worker shortly after (status becomes `cancelled`)
  app.delete<{ Params: { id: string } }>("/builds/:id", async (request, reply) => {
    await visible(request.principal, request.params.id);
    const { record, outcome } = await deps.builds.cancel(request.params.id);
    // removed from the queue here: no worker will end it, so its webhooks go out from here
    if (outcome === "cancelled") await deps.notifier?.buildEnded(record).catch((error: Error) => request.log.error({ err: { message: error.message } }, "could not enqueue the build's webhooks"));
    return reply.status(202).send({ id: record.id, status: record.status, cancel: outcome, links: links(record.id) });
  });

  app.get<{ Params: { id: string }; Querystring: { follow?: string } }>("/builds/:id/logs", async (request, reply) => {
    const { id } = request.params;
    const record = await visible(request.principal, id);
    const wantsStream = request.query.follow === "1" || request.query.follow === "true" || (request.headers.accept ?? "").includes("text/event-stream");
    if (!wantsStream) {
      // Redis holds only the live tail: once uploaded, the archived log is the complete one
      const complete = record.artifacts?.log === "uploaded" ? await history.archivedLog(id) : await history.logIfForgotten(id);
      return reply.type("text/plain; charset=utf-8").send(complete ?? (await deps.store.renderLog(id)));
    }
    // once the Redis stream is gone (expired), the archived log is the log
    const archivedLog = await history.logIfForgotten(id);
    const lastEventId = (request.headers["last-event-id"] as string | undefined) ?? "0";
    const abort = new AbortController();
    // the response closing (not the request) is what signals a client going away
    reply.raw.on("close", () => abort.abort());
    reply.hijack();
    reply.raw.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    try {
      const events = archivedLog ? archivedEvents(archivedLog, lastEventId) : history.events(id, lastEventId, abort.signal);
      for await (const item of events) {
        reply.raw.write(`id: ${item.id}\nevent: ${item.event.type}\ndata: ${JSON.stringify(item.event)}\n\n`);
      }
      reply.raw.write("event: end\ndata: {}\n\n");
    } catch (error) {
      request.log.warn({ err: error }, "log stream ended with an error");
    } finally {
      reply.raw.end();
    }
  });

  const deliveries = deps.webhookDeliveries;
  if (deliveries) {
    app.get<{ Querystring: { limit?: string; cursor?: string } }>("/webhooks/deliveries", { config: { auth: { access: "admin" } } }, async (request) => {
      const { limit, cursor } = request.query;
      const parsedLimit = limit === undefined ? 50 : Number(limit);
      if (!Number.isInteger(parsedLimit) || parsedLimit < 1 || parsedLimit > 500) {
        throw new BuilderError("VALIDATION_FAILED", "limit must be an integer from 1 to 500", { issues: [{ field: "limit", message: "must be an integer from 1 to 500" }] });
      }
      if (cursor !== undefined && !isDeliveryCursor(cursor)) {
        throw new BuilderError("VALIDATION_FAILED", "cursor is not one this API handed out", { issues: [{ field: "cursor", message: "not a cursor from a previous page" }] });
      }
      return deliveries.page({ limit: parsedLimit, cursor });
    });
  }

  if (deps.queue) {
    registerMetricsRoute(app, createApiMetrics(deps.queue, deps.store));
    await registerSignIn(app, { authenticator: deps.auth, sessions, secureCookie: deps.secureCookie ?? false });
    await registerDashboard(app, deps.queue, deps.auth.disabled ? {} : { signOutPath: SIGN_OUT_PATH });
  }

  return app;
}
