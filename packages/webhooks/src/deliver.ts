import { withDeadline, DeadlineExceeded } from "@m1l0/config";
import type { NetworkGuard } from "@m1l0/source";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import type { WebhookEndpoint } from "./config.js";
import type { WebhookPayload } from "./payload.js";
import { DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER } from "./signature.js";

/** Why one attempt failed. `code`: WEBHOOK_TIMEOUT, WEBHOOK_HTTP_STATUS, WEBHOOK_REDIRECT, WEBHOOK_UNREACHABLE, WEBHOOK_HOST_REFUSED. */
export class WebhookDeliveryError extends Error {
  override readonly name = "WebhookDeliveryError";
  constructor(
    readonly code: string,
    message: string,
    options: { cause?: unknown; statusCode?: number } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.statusCode = options.statusCode;
  }
  readonly statusCode: number | undefined;
}

export interface AttemptLimits {
  timeoutMs: number;
  maxResponseBytes: number;
}

/** How much of a refusing receiver's answer the history keeps (it is the receiver's text, not ours). */
const SNIPPET_CHARS = 200;

/**
 * One attempt: POSTs the signed payload and resolves with the 2xx status, or throws a
 * WebhookDeliveryError. The whole attempt (connect, send, status, body) has one deadline that
 * fires even against a receiver that accepts and never answers; redirects are not followed; at
 * most `maxResponseBytes` of the answer are read; the connection goes only to addresses the
 * host policy allows (checked on the resolved address, so DNS rebinding cannot get past it).
 */
export async function sendWebhook(endpoint: WebhookEndpoint, payload: WebhookPayload, limits: AttemptLimits, guard: NetworkGuard): Promise<{ statusCode: number }> {
  const body = JSON.stringify(payload);
  const timestamp = String(Math.floor(Date.now() / 1000));
  const headers = {
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
    "user-agent": "m1l0-webhooks/1",
    [EVENT_HEADER]: payload.event,
    [DELIVERY_HEADER]: payload.deliveryId,
    [TIMESTAMP_HEADER]: timestamp,
    [SIGNATURE_HEADER]: endpoint.secret.sign(timestamp, body),
  };
  const onTimeout = () => new WebhookDeliveryError("WEBHOOK_TIMEOUT", `no complete answer from ${endpoint.url.origin} within ${limits.timeoutMs} ms`, { cause: new DeadlineExceeded(limits.timeoutMs) });
  return withDeadline({ timeoutMs: limits.timeoutMs, onTimeout }, (signal) =>
    new Promise<{ statusCode: number }>((resolve, reject) => {
      const send = endpoint.url.protocol === "https:" ? httpsRequest : httpRequest;
      const req = send(endpoint.url, { method: "POST", headers, lookup: guard.lookup, signal }, (response) => {
        readCapped(response, limits.maxResponseBytes).then((snippet) => {
          const statusCode = response.statusCode ?? 0;
          if (statusCode >= 200 && statusCode < 300) return resolve({ statusCode });
          if (statusCode >= 300 && statusCode < 400) {
            return reject(new WebhookDeliveryError("WEBHOOK_REDIRECT", `the receiver answered HTTP ${statusCode} (a redirect); redirects are not followed: configure the final URL`, { statusCode }));
          }
          reject(new WebhookDeliveryError("WEBHOOK_HTTP_STATUS", `the receiver answered HTTP ${statusCode}${snippet ? `: ${snippet}` : ""}`, { statusCode }));
        }, reject);
      });
      req.on("error", (error: NodeJS.ErrnoException & { code?: string }) => {
        if (signal.aborted) return reject(signal.reason as Error);
        if (error.code === "SOURCE_NOT_ALLOWED" || (error as { name?: string }).name === "BuilderError") {
          return reject(new WebhookDeliveryError("WEBHOOK_HOST_REFUSED", `${endpoint.url.hostname} is not allowed: ${error.message.replace(/^source host \S+ is not allowed: /, "").replace(/; builds may only fetch.*$/, "")}`, { cause: error }));
        }
        reject(new WebhookDeliveryError("WEBHOOK_UNREACHABLE", `cannot reach ${endpoint.url.origin}: ${error.code ?? error.message}`, { cause: error }));
      });
      req.end(body);
    }),
  );
}

/** Reads at most `max` bytes of the answer (then stops reading it) and returns the start of it as text. */
function readCapped(response: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    const done = () => resolve(Buffer.concat(chunks).toString("utf8").slice(0, SNIPPET_CHARS).replace(/\s+/g, " ").trim());
    response.on("data", (chunk: Buffer) => {
      if (bytes < SNIPPET_CHARS * 4) chunks.push(chunk);
      bytes += chunk.length;
      if (bytes > max) {
        // enough: the status is what counts; drop the connection rather than read an endless body
        response.destroy();
        done();
      }
    });
    response.on("end", done);
    response.on("error", (error) => (bytes > max ? done() : reject(error)));
  });
}
