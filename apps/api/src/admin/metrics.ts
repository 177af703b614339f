import { BUILD_STATUSES } from "@m1l0/config";
import type { BuildStore } from "@m1l0/queue";
import type { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import { Gauge, Registry, collectDefaultMetrics } from "prom-client";

/** Job states BullMQ reports; `getJobCounts` answers all of them in one round trip. */
const QUEUE_STATES = ["waiting", "active", "delayed", "prioritized", "waiting-children", "completed", "failed"] as const;
/** How many of the newest records the status gauge looks at (it reads them on every scrape). */
const RECENT_BUILDS = 500;

/**
 * The API's Prometheus registry. Values are read from Redis at scrape time, so every replica
 * reports the same shared queue and builds (no per-process counters to add up).
 */
export function createApiMetrics(queue: Queue, store: BuildStore): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "m1l0_api_" });
  new Gauge({
    name: "m1l0_queue_jobs",
    help: "Build jobs in the queue by BullMQ state (completed/failed within the retention window)",
    labelNames: ["state"] as const,
    registers: [registry],
    async collect() {
      const counts = await queue.getJobCounts(...QUEUE_STATES);
      for (const state of QUEUE_STATES) this.set({ state }, counts[state] ?? 0);
    },
  });
  new Gauge({
    name: "m1l0_builds_recent",
    help: `Builds by status (outcome for finished ones) among the ${RECENT_BUILDS} most recent in Redis`,
    labelNames: ["status"] as const,
    registers: [registry],
    async collect() {
      const records = await store.list({ limit: RECENT_BUILDS });
      for (const status of BUILD_STATUSES) this.set({ status }, records.filter((record) => record.status === status).length);
    },
  });
  return registry;
}

export function registerMetricsRoute(app: FastifyInstance, registry: Registry): void {
  app.get("/metrics", { schema: { hide: true } }, async (_request, reply) => {
    const body = await registry.metrics();
    return reply.type(registry.contentType).send(body);
  });
}
