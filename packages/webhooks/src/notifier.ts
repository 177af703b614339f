import { isTerminal, type BuildRecord } from "@m1l0/config";
import { BUILD_QUEUE_NAME } from "@m1l0/queue";
import { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { WebhookSettings } from "./config.js";
import type { WebhookDeliveryStore } from "./history.js";
import { deliveryIdOf, webhookPayload, type WebhookPayload } from "./payload.js";

/** The port through which the one place that ends a build (the worker's finishBuild) tells the world. */
export interface BuildNotifier {
  /** called with the record as it ended (any status: only the configured terminal ones go out) */
  buildEnded(record: BuildRecord): Promise<void>;
  close(): Promise<void>;
}

/** A deployment with no webhook endpoints: builds end and nobody is told (the choice is made once, at start). */
export const NO_WEBHOOKS: BuildNotifier = {
  buildEnded: () => Promise.resolve(),
  close: () => Promise.resolve(),
};

/** What a delivery job carries: the endpoint's name (its URL and secret stay in the config) and the body. */
export interface WebhookJobData {
  endpoint: string;
  payload: WebhookPayload;
}

/** The delivery queue of a build queue: its own, so webhooks never wait behind builds (or hold them up). */
export function webhookQueueName(buildQueueName: string = BUILD_QUEUE_NAME): string {
  return `${buildQueueName}-webhooks`;
}

/**
 * Enqueues one delivery per endpoint that wants the build's status. The job id is the delivery
 * id, so a build ended twice (a retried finish, a worker taking over) is still one delivery;
 * BullMQ retries it with exponential backoff up to the configured attempts.
 */
export class WebhookNotifier implements BuildNotifier {
  private readonly queue: Queue<WebhookJobData>;

  constructor(
    connection: Redis,
    queueName: string,
    private readonly settings: WebhookSettings,
    private readonly history: WebhookDeliveryStore,
  ) {
    this.queue = new Queue<WebhookJobData>(queueName, { connection });
    this.queue.on("error", () => undefined); // surfaced by the add() that fails
  }

  async buildEnded(record: BuildRecord): Promise<void> {
    if (!isTerminal(record.status)) return;
    for (const endpoint of this.settings.endpoints) {
      if (!endpoint.events.has(record.status)) continue;
      const id = deliveryIdOf(record.id, record.status, endpoint.name);
      const payload = webhookPayload(record, id);
      // history first: the delivery worker may pick the job up at once and update it
      await this.history.create({
        id,
        endpoint: endpoint.name,
        origin: endpoint.url.origin,
        event: payload.event,
        buildId: record.id,
        status: record.status,
        state: "pending",
        attempts: 0,
        maxAttempts: this.settings.attempts,
        eventAt: payload.build.finishedAt,
        createdAt: new Date().toISOString(),
      });
      await this.queue.add("deliver", { endpoint: endpoint.name, payload }, {
        jobId: id,
        attempts: this.settings.attempts,
        backoff: { type: "exponential", delay: this.settings.backoffMs },
        // the history keeps the story; finished jobs only need to stay long enough to dedup a late re-enqueue
        removeOnComplete: { age: 24 * 3600, count: 10_000 },
        removeOnFail: { age: 7 * 24 * 3600, count: 10_000 },
      });
    }
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
