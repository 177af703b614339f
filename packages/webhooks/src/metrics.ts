import { Counter, Histogram, type Registry } from "prom-client";

/** Delivery metrics, registered in the process's registry (the worker's /metrics). */
export class WebhookMetrics {
  readonly deliveries: Counter<"endpoint" | "outcome">;
  readonly latency: Histogram<"endpoint">;

  constructor(registry: Registry) {
    this.deliveries = new Counter({
      name: "m1l0_webhook_deliveries_total",
      help: "Webhook delivery attempts by outcome: delivered (2xx), retry (failed, will be tried again), failed (gave up after the configured attempts or refused for good)",
      labelNames: ["endpoint", "outcome"] as const,
      registers: [registry],
    });
    this.latency = new Histogram({
      name: "m1l0_webhook_delivery_latency_seconds",
      help: "Time from a build reaching its status to the receiver's 2xx for it (retries included)",
      labelNames: ["endpoint"] as const,
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800],
      registers: [registry],
    });
  }
}
