import { NetworkGuard } from "@m1l0/source";
import { UnrecoverableError, Worker, type Job } from "bullmq";
import type { Redis } from "ioredis";
import type { WebhookSettings } from "./config.js";
import { WebhookDeliveryError, sendWebhook } from "./deliver.js";
import type { WebhookDeliveryStore } from "./history.js";
import type { WebhookMetrics } from "./metrics.js";
import type { WebhookJobData } from "./notifier.js";

export interface DeliveryLogger {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
}

export interface WebhookDeliveryWorkerOptions {
  connection: Redis;
  queueName: string;
  settings: WebhookSettings;
  history: WebhookDeliveryStore;
  metrics: WebhookMetrics;
  logger: DeliveryLogger;
}

/**
 * Delivers the webhook queue's jobs: each attempt is recorded in the history and counted; a
 * failed attempt throws, so BullMQ retries it after the exponential backoff, until the last
 * attempt, which marks the delivery `failed` with its reason. At least once: a worker that
 * dies mid-attempt leaves the job to be taken over when its lock lapses, and the receiver
 * drops the duplicate by its delivery id.
 */
export function startWebhookDeliveryWorker(options: WebhookDeliveryWorkerOptions): Worker<WebhookJobData> {
  const { settings, history, metrics, logger } = options;
  const guard = new NetworkGuard(settings.network);
  const endpoints = new Map(settings.endpoints.map((endpoint) => [endpoint.name, endpoint]));
  const worker = new Worker<WebhookJobData>(
    options.queueName,
    async (job: Job<WebhookJobData>) => {
      const { endpoint: name, payload } = job.data;
      const id = payload.deliveryId;
      const attempt = job.attemptsMade + 1;
      const maxAttempts = job.opts.attempts ?? 1;
      const endpoint = endpoints.get(name);
      const startedAt = new Date().toISOString();
      if (!endpoint) {
        const lastError = { code: "WEBHOOK_ENDPOINT_REMOVED", message: `endpoint ${name} is no longer configured on this worker` };
        await history.update(id, (d) => ({ ...d, state: "failed", attempts: attempt, lastAttemptAt: startedAt, lastError }));
        metrics.deliveries.inc({ endpoint: name, outcome: "failed" });
        throw new UnrecoverableError(lastError.message);
      }
      try {
        const { statusCode } = await sendWebhook(endpoint, payload, settings, guard);
        const deliveredAt = new Date();
        const latencyMs = deliveredAt.getTime() - Date.parse(payload.build.finishedAt);
        await history.update(id, (d) => ({ ...d, state: "delivered", attempts: attempt, lastAttemptAt: startedAt, deliveredAt: deliveredAt.toISOString(), latencyMs, lastStatusCode: statusCode }));
        metrics.deliveries.inc({ endpoint: name, outcome: "delivered" });
        metrics.latency.observe({ endpoint: name }, latencyMs / 1000);
        return { statusCode };
      } catch (error) {
        const failure = error instanceof WebhookDeliveryError ? error : new WebhookDeliveryError("WEBHOOK_UNREACHABLE", (error as Error).message, { cause: error });
        const final = attempt >= maxAttempts;
        const lastError = { code: failure.code, message: final ? `gave up after ${attempt} attempt${attempt === 1 ? "" : "s"}: ${failure.message}` : failure.message };
        await history.update(id, (d) => ({ ...d, state: final ? "failed" : "retrying", attempts: attempt, lastAttemptAt: startedAt, lastError, ...(failure.statusCode ? { lastStatusCode: failure.statusCode } : {}) }));
        metrics.deliveries.inc({ endpoint: name, outcome: final ? "failed" : "retry" });
        logger.warn({ delivery: id, endpoint: name, attempt, maxAttempts, code: failure.code }, final ? "webhook delivery failed for good" : "webhook delivery attempt failed; will retry");
        throw failure;
      }
    },
    // a delivery attempt is bounded by its own deadline: a lock well beyond it means a lapsed lock is a dead worker
    { connection: options.connection, concurrency: settings.concurrency, lockDuration: Math.max(30_000, settings.timeoutMs * 3) },
  );
  worker.on("error", (error) => logger.warn({ err: { message: error.message } }, "webhook delivery worker error"));
  return worker;
}
