import type { BuildStatus } from "@m1l0/config";
import type { Redis } from "ioredis";

export type DeliveryState = "pending" | "retrying" | "delivered" | "failed";

/** One delivery (one build status to one endpoint) as admins see it: no secret, no URL path or query. */
export interface WebhookDelivery {
  id: string;
  endpoint: string;
  /** scheme://host[:port] of the endpoint (paths and queries can carry tokens of their own) */
  origin: string;
  event: string;
  buildId: string;
  status: BuildStatus;
  state: DeliveryState;
  attempts: number;
  maxAttempts: number;
  /** when the build reached the status, when the delivery was queued, tried, delivered */
  eventAt: string;
  createdAt: string;
  lastAttemptAt?: string;
  deliveredAt?: string;
  /** milliseconds from eventAt to the receiver's 2xx */
  latencyMs?: number;
  lastStatusCode?: number;
  /** why the last attempt failed: a code and a message; on `failed`, why the delivery gave up */
  lastError?: { code: string; message: string };
}

export interface DeliveryPage {
  deliveries: WebhookDelivery[];
  nextCursor: string | null;
}

const MAX_INDEXED = 10_000;
const TTL_SECONDS = 7 * 24 * 3600;
const NEWEST = 9_999_999_999_999;

/**
 * Delivery history in Redis: one JSON value per delivery (kept 7 days) and an index sorted
 * newest first (members `<inverted ms>|<id>` of one score, read BYLEX: a cursor is the last
 * member seen, so pages neither skip nor repeat as deliveries are added). At most 10,000 are
 * indexed; older ones drop off.
 */
export class WebhookDeliveryStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key(id: string): string {
    return `${this.prefix}webhooks:delivery:${id}`;
  }

  private get index(): string {
    return `${this.prefix}webhooks:deliveries`;
  }

  /** Records a new delivery (only if it is new: a repeated enqueue keeps the history it has). */
  async create(delivery: WebhookDelivery): Promise<boolean> {
    const created = await this.redis.set(this.key(delivery.id), JSON.stringify(delivery), "EX", TTL_SECONDS, "NX");
    if (created !== "OK") return false;
    const member = `${String(NEWEST - Date.parse(delivery.createdAt)).padStart(13, "0")}|${delivery.id}`;
    await this.redis.multi().zadd(this.index, 0, member).zremrangebyrank(this.index, MAX_INDEXED, -1).exec();
    return true;
  }

  async get(id: string): Promise<WebhookDelivery | undefined> {
    const text = await this.redis.get(this.key(id));
    return text ? (JSON.parse(text) as WebhookDelivery) : undefined;
  }

  /** Applies `change` to a delivery (one worker holds its job at a time, so no one else writes it meanwhile). */
  async update(id: string, change: (delivery: WebhookDelivery) => WebhookDelivery): Promise<WebhookDelivery | undefined> {
    const current = await this.get(id);
    if (!current) return undefined;
    const next = change(current);
    await this.redis.set(this.key(id), JSON.stringify(next), "EX", TTL_SECONDS);
    return next;
  }

  /** Newest first, `limit` at a time; `cursor` is the previous page's nextCursor. */
  async page(options: { limit: number; cursor?: string | undefined }): Promise<DeliveryPage> {
    const after = options.cursor === undefined ? undefined : Buffer.from(options.cursor, "base64url").toString("utf8");
    const members = await this.redis.zrangebylex(this.index, after === undefined ? "-" : `(${after}`, "+", "LIMIT", 0, options.limit);
    const ids = members.map((member) => member.slice(member.indexOf("|") + 1));
    const values = ids.length ? await this.redis.mget(...ids.map((id) => this.key(id))) : [];
    const deliveries = values.filter((text): text is string => text !== null).map((text) => JSON.parse(text) as WebhookDelivery);
    const last = members.at(-1);
    return { deliveries, nextCursor: members.length === options.limit && last ? Buffer.from(last, "utf8").toString("base64url") : null };
  }
}

/** Is `text` a cursor this store hands out? (for a clear 400 instead of an empty page) */
export function isDeliveryCursor(text: string): boolean {
  return /^\d{13}\|[^|]+$/.test(Buffer.from(text, "base64url").toString("utf8"));
}
