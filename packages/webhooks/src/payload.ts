import type { BuildRecord, BuildStatus } from "@m1l0/config";

/** The JSON body of a delivery: what an orchestrator needs to act on a build's end. */
export interface WebhookPayload {
  /** `build.<status>`, e.g. build.succeeded */
  event: string;
  /** the delivery id (also the X-M1L0-Delivery header): the same on every retry, so a receiver drops duplicates */
  deliveryId: string;
  build: {
    id: string;
    status: BuildStatus;
    /** the pushed (or, when cached, already present) image; null when there is none */
    image: { reference: string; digest: string | null } | null;
    error: { code: string; message: string } | null;
    /** name of the API token that submitted it; null when authentication is off */
    submitter: string | null;
    createdAt: string;
    /** when it reached this status */
    finishedAt: string;
    timestamps: BuildRecord["timestamps"];
    attempts: number;
  };
}

/** The delivery id of one build status for one endpoint: stable, so a repeated enqueue is one delivery. */
export function deliveryIdOf(buildId: string, status: BuildStatus, endpoint: string): string {
  return `${buildId}.${status}.${endpoint}`;
}

export function webhookPayload(record: BuildRecord, deliveryId: string): WebhookPayload {
  return {
    event: `build.${record.status}`,
    deliveryId,
    build: {
      id: record.id,
      status: record.status,
      image: record.image ? { reference: record.image.reference, digest: record.image.digest ?? null } : null,
      error: record.error ? { code: record.error.code, message: record.error.message } : null,
      submitter: record.submitter ?? null,
      createdAt: record.createdAt,
      finishedAt: record.timestamps[record.status] ?? record.updatedAt,
      timestamps: record.timestamps,
      attempts: record.attempts,
    },
  };
}
