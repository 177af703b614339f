#!/usr/bin/env node
import { loadCatalog } from "@m1l0/catalog";
import { BUILD_QUEUE_NAME, BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { createArtifactStore } from "@m1l0/storage";
import { Queue } from "bullmq";
import { buildApp } from "./app.js";
import { BuildService } from "./builds.js";
import { loadApiEnv } from "./env.js";
import { startGrpcServer } from "./grpc/server.js";

const env = loadApiEnv();
const redis = createRedis(env.REDIS_URL, "producer");
redis.on("error", () => undefined); // surfaced per request as 503 QUEUE_UNAVAILABLE
const queue = new Queue<BuildJobData>(env.BUILD_QUEUE_NAME ?? BUILD_QUEUE_NAME, { connection: redis });
queue.on("error", () => undefined);
const store = new BuildStore(redis, env.REDIS_KEY_PREFIX);
const catalog = loadCatalog({
  ...(env.CATALOG_FILE ? { catalogFile: env.CATALOG_FILE } : {}),
  ...(env.CATALOG_OVERRIDES_FILE ? { overridesFile: env.CATALOG_OVERRIDES_FILE } : {}),
});
const builds = new BuildService(store, queue, catalog, { allowHttp: env.ALLOW_HTTP_SOURCES, allowDir: env.ALLOW_DIR_SOURCES, registryAllowlist: env.REGISTRY_ALLOWLIST, maxTimeoutSeconds: env.BUILD_TIMEOUT_MAX_SECONDS });
const artifacts = createArtifactStore({
  ...(env.S3_BUCKET ? { bucket: env.S3_BUCKET } : {}),
  s3: { region: env.S3_REGION, ...(env.S3_ENDPOINT ? { endpoint: env.S3_ENDPOINT } : {}), forcePathStyle: env.S3_FORCE_PATH_STYLE },
  localDir: env.ARTIFACTS_DIR,
});
const app = await buildApp({
  builds,
  store,
  redis,
  queue,
  artifacts,
  bodyLimit: env.BODY_LIMIT_BYTES,
  logger: {
    level: env.LOG_LEVEL,
    redact: ["req.headers.authorization"],
    ...(process.stdout.isTTY ? {} : {}),
  },
});

// gRPC binds before REST listens, so a ready /readyz means both ingresses are up
const grpc = await startGrpcServer({
  builds,
  store,
  redis,
  host: env.GRPC_HOST,
  port: env.GRPC_PORT,
  tls: { certFile: env.GRPC_TLS_CERT_FILE, keyFile: env.GRPC_TLS_KEY_FILE },
  logger: app.log.child({ component: "grpc" }),
});
await app.listen({ host: env.HOST, port: env.PORT });

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    app.log.info({ signal }, "shutting down");
    void Promise.all([app.close(), grpc.close()])
      .then(() => queue.close())
      .then(() => redis.quit())
      .finally(() => process.exit(0));
  });
}
