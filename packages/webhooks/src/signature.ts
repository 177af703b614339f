import { createHmac, timingSafeEqual } from "node:crypto";

/** Header names of a delivery (lowercase, as Node exposes them). */
export const SIGNATURE_HEADER = "x-m1l0-signature";
export const TIMESTAMP_HEADER = "x-m1l0-timestamp";
export const DELIVERY_HEADER = "x-m1l0-delivery";
export const EVENT_HEADER = "x-m1l0-event";

/**
 * An endpoint's secret: signs, and never shows itself. JSON, util.inspect and string
 * conversion all print "[redacted]", so an endpoint logged by mistake leaks nothing.
 */
export class WebhookSecret {
  readonly #secret: string;

  constructor(secret: string) {
    this.#secret = secret;
  }

  /** `sha256=<hex>` of HMAC-SHA256(secret, `${timestamp}.${body}`). */
  sign(timestamp: string, body: string): string {
    return signWebhook(this.#secret, timestamp, body);
  }

  toJSON(): string {
    return "[redacted]";
  }

  toString(): string {
    return "[redacted]";
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return "[redacted]";
  }
}

/** The signature header value: `sha256=` + hex HMAC-SHA256 over the timestamp, a dot, and the raw body. */
export function signWebhook(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`, "utf8").digest("hex")}`;
}

/**
 * What a receiver runs (kept here so tests and the README show the same check): the signature
 * matches the raw body and timestamp, in constant time, and the timestamp is recent (replays of
 * an old delivery are refused; the delivery id drops duplicates within the window).
 */
export function verifyWebhookSignature(secret: string, headers: { signature: string | undefined; timestamp: string | undefined }, body: string, options: { toleranceSeconds?: number; nowMs?: number } = {}): boolean {
  const { signature, timestamp } = headers;
  if (!signature || !timestamp || !/^\d{1,12}$/.test(timestamp)) return false;
  const age = Math.abs((options.nowMs ?? Date.now()) / 1000 - Number(timestamp));
  if (age > (options.toleranceSeconds ?? 300)) return false;
  const expected = Buffer.from(signWebhook(secret, timestamp, body));
  const presented = Buffer.from(signature);
  return expected.length === presented.length && timingSafeEqual(expected, presented);
}
