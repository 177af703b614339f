#!/usr/bin/env node
import { catalogFromEnv } from "@m1l0/catalog";
import { AWS_SECRET_VARIABLES, resolveFileVariables } from "@m1l0/config";
import { readFileSync } from "node:fs";
import { BUILD_QUEUE_NAME, BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { artifactStoreFromEnv } from "@m1l0/storage";
import { Queue } from "bullmq";
import { BuildHistory } from "./admin/index.js";
import { buildApp } from "./app.js";
import { authenticatorFromEnv } from "./auth/config.js";
import { watchTokensFile } from "./auth/reload.js";
import { SubmissionRateLimiter } from "./auth/rate-limit.js";
import { DashboardSessions } from "./auth/session.js";
import { BuildService } from "./builds.js";
import { loadApiEnv, restTls } from "./env.js";
import { WebhookDeliveryStore, WebhookNotifier, loadWebhookSettings, webhookQueueName } from "@m1l0/webhooks";
import { startGrpcServer } from "./grpc/server.js";

// the AWS SDK's default chain reads process.env: AWS_*_FILE secrets are resolved into it
Object.assign(process.env, resolveFileVariables(process.env, AWS_SECRET_VARIABLES, (file) => readFileSync(file, "utf8")));
const env = loadApiEnv();
const auth = authenticatorFromEnv(env); // throws (the process exits) when no token is configured and auth is not disabled
const redis = createRedis(env.REDIS_URL, "producer");
redis.on("error", () => undefined); // surfaced per request as 503 QUEUE_UNAVAILABLE
const queue = new Queue<BuildJobData>(env.BUILD_QUEUE_NAME ?? BUILD_QUEUE_NAME, { connection: redis });
queue.on("error", () => undefined);
const store = new BuildStore(redis, env.REDIS_KEY_PREFIX);
const catalog = catalogFromEnv(env);
const builds = new BuildService(store, queue, catalog, { allowHttp: env.ALLOW_HTTP_SOURCES, allowDir: env.ALLOW_DIR_SOURCES, registryAllowlist: env.REGISTRY_ALLOWLIST, maxTimeoutSeconds: env.BUILD_TIMEOUT_MAX_SECONDS,
  sourceHosts: { allowPrivateHosts: env.ALLOW_PRIVATE_SOURCE_HOSTS, hostAllowlist: env.SOURCE_HOST_ALLOWLIST },
});
const artifacts = artifactStoreFromEnv(env);
const rateLimiter = new SubmissionRateLimiter(redis, env.REDIS_KEY_PREFIX, { max: env.SUBMIT_RATE_LIMIT_MAX, windowMs: env.SUBMIT_RATE_LIMIT_WINDOW_SECONDS * 1000 });
const https = restTls(env);
const webhookSettings = loadWebhookSettings(process.env, { readSecrets: false }); // the API only enqueues: it needs names and events, not secrets
const notifier = webhookSettings ? new WebhookNotifier(redis, webhookQueueName(env.BUILD_QUEUE_NAME ?? BUILD_QUEUE_NAME), webhookSettings, new WebhookDeliveryStore(redis, env.REDIS_KEY_PREFIX)) : undefined;
const app = await buildApp({
  webhookDeliveries: new WebhookDeliveryStore(redis, env.REDIS_KEY_PREFIX),
  ...(notifier ? { notifier } : {}),
  ...(https ? { https } : {}),
  auth,
  rateLimiter,
  metricsPublic: env.METRICS_PUBLIC,
  sessions: new DashboardSessions(redis, { prefix: env.REDIS_KEY_PREFIX, ttlSeconds: env.DASHBOARD_SESSION_TTL_SECONDS }),
  secureCookie: env.DASHBOARD_COOKIE_SECURE,
  builds,
  store,
  redis,
  queue,
  artifacts,
  bodyLimit: env.BODY_LIMIT_BYTES,
  logger: {
    level: env.LOG_LEVEL,
    redact: ["req.headers.authorization", "req.headers.cookie", 'res.headers["set-cookie"]'],
    ...(process.stdout.isTTY ? {} : {}),
  },
});

// a token removed from (or added to) API_TOKENS_FILE counts within about API_TOKENS_POLL_MS, no restart
const tokenReloader = watchTokensFile(auth, env, app.log.child({ component: "tokens" }), { pollIntervalMs: env.API_TOKENS_POLL_MS });

if (auth.disabled) {
  app.log.warn("AUTHENTICATION IS DISABLED (AUTH_DISABLED=true): anyone who can reach this API can submit, read and cancel every build, and open the dashboard. Development only.");
} else {
  app.log.info({ tokens: auth.tokenCount, submitRateLimit: rateLimiter.enabled ? `${env.SUBMIT_RATE_LIMIT_MAX}/${env.SUBMIT_RATE_LIMIT_WINDOW_SECONDS}s per token` : "off" }, "API authentication on");
}

// gRPC binds before REST listens, so a ready /readyz means both ingresses are up
const grpc = await startGrpcServer({
  builds,
  history: new BuildHistory(store, artifacts),
  redis,
  auth,
  rateLimiter,
  host: env.GRPC_HOST,
  port: env.GRPC_PORT,
  tls: { certFile: env.GRPC_TLS_CERT_FILE, keyFile: env.GRPC_TLS_KEY_FILE },
  logger: app.log.child({ component: "grpc" }),
});
await app.listen({ host: env.HOST, port: env.PORT });

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    app.log.info({ signal }, "shutting down");
    tokenReloader.close();
    void Promise.all([app.close(), grpc.close()])
      .then(() => notifier?.close())
      .then(() => queue.close())
      .then(() => redis.quit())
      .finally(() => process.exit(0));
  });
}

