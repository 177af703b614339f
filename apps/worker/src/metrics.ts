import type { BuildRecord, ErrorCode } from "@m1l0/config";
import { createServer, type Server } from "node:http";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** Phases as the record's status timestamps delimit them: entered at `from`, left at `to`. */
const PHASES = [
  { phase: "fetch", from: "fetching" },
  { phase: "build", from: "building" },
  { phase: "push", from: "pushing" },
] as const;
const PHASE_ORDER = ["fetching", "building", "pushing", "succeeded", "failed", "cancelled", "cached"] as const;
const REGISTRY_CODES: ReadonlySet<ErrorCode> = new Set(["REGISTRY_AUTH_FAILED", "REGISTRY_UNREACHABLE", "PUSH_FAILED"]);

/** What a worker exports on /metrics. Each worker has its own registry (no global state). */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly buildsTotal = new Counter({
    name: "m1l0_worker_builds_total",
    help: "Builds this worker finished, by outcome (succeeded, failed)",
    labelNames: ["outcome"] as const,
    registers: [this.registry],
  });
  readonly phaseDuration = new Histogram({
    name: "m1l0_worker_phase_duration_seconds",
    help: "Time spent in each build phase (fetch, build, push) of finished builds",
    labelNames: ["phase"] as const,
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800],
    registers: [this.registry],
  });
  readonly activeBuilds = new Gauge({
    name: "m1l0_worker_active_builds",
    help: "Builds running on this worker now",
    registers: [this.registry],
  });
  readonly artifactUploadErrors = new Counter({
    name: "m1l0_worker_artifact_upload_errors_total",
    help: "Failed attempts to upload a build artifact (log, context, record) to S3 / the artifact store",
    labelNames: ["artifact"] as const,
    registers: [this.registry],
  });
  readonly registryErrors = new Counter({
    name: "m1l0_worker_registry_errors_total",
    help: "Build attempts that failed talking to a registry, by error code",
    labelNames: ["code"] as const,
    registers: [this.registry],
  });

  constructor(workerId: string) {
    this.registry.setDefaultLabels({ worker: workerId });
    collectDefaultMetrics({ register: this.registry, prefix: "m1l0_worker_" });
  }

  /** Counts a terminal build and observes its phase durations from the record's timestamps. */
  observeFinished(record: BuildRecord): void {
    this.buildsTotal.inc({ outcome: record.status });
    for (const { phase, from } of PHASES) {
      const started = record.timestamps[from];
      const next = PHASE_ORDER.slice(PHASE_ORDER.indexOf(from) + 1)
        .map((status) => record.timestamps[status])
        .find((at): at is string => at !== undefined && at >= (started ?? ""));
      if (started && next) this.phaseDuration.observe({ phase }, (Date.parse(next) - Date.parse(started)) / 1000);
    }
  }

  observeFailedAttempt(code: ErrorCode): void {
    if (REGISTRY_CODES.has(code)) this.registryErrors.inc({ code });
  }
}

/**
 * A bare HTTP listener serving GET /metrics (the worker has no other HTTP surface).
 * Listening errors (port taken) are reported through `onError`, not thrown.
 */
export function startMetricsServer(metrics: WorkerMetrics, port: number, host: string, onError: (error: Error) => void): Server {
  const server = createServer((request, response) => {
    if (request.method !== "GET" || request.url?.split("?")[0] !== "/metrics") {
      response.writeHead(404).end();
      return;
    }
    metrics.registry.metrics().then(
      (body) => response.writeHead(200, { "content-type": metrics.registry.contentType }).end(body),
      (error: Error) => response.writeHead(500).end(error.message),
    );
  });
  server.on("error", onError);
  server.listen(port, host);
  return server;
}
