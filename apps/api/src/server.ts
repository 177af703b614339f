#!/usr/bin/env node
import { loadCatalog } from "@m1l0/catalog";
import { BUILD_QUEUE_NAME, BuildStore, createRedis, type BuildJobData } from "@m1l0/queue";
import { Queue } from "bullmq";
import { buildApp } from "./app.js";
import { BuildService } from "./builds.js";
import { loadApiEnv } from "./env.js";

const env = loadApiEnv();
const redis = createRedis(env.REDIS_URL, "producer");
redis.on("error", () => undefined); // surfaced per request as 503 QUEUE_UNAVAILABLE
const queue = new Queue<BuildJobData>(env.BUILD_QUEUE_NAME ?? BUILD_QUEUE_NAME, { connection: redis });
queue.on("error", () => undefined);
const store = new BuildStore(redis);
const catalog = loadCatalog({
  ...(env.CATALOG_FILE ? { catalogFile: env.CATALOG_FILE } : {}),
  ...(env.CATALOG_OVERRIDES_FILE ? { overridesFile: env.CATALOG_OVERRIDES_FILE } : {}),
});
const builds = new BuildService(store, queue, catalog, { allowHttp: env.ALLOW_HTTP_SOURCES, allowDir: env.ALLOW_DIR_SOURCES });
const app = await buildApp({
  builds,
  store,
  redis,
  bodyLimit: env.BODY_LIMIT_BYTES,
  logger: {
    level: env.LOG_LEVEL,
    redact: ["req.headers.authorization"],
    ...(process.stdout.isTTY ? {} : {}),
  },
});

await app.listen({ host: env.HOST, port: env.PORT });

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    app.log.info({ signal }, "shutting down");
    void app
      .close()
      .then(() => queue.close())
      .then(() => redis.quit())
      .finally(() => process.exit(0));
  });
}
