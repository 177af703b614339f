import type { Redis } from "ioredis";

/** Where a build's log spool is: a file on one worker's host, uploaded up to `partEnd` (its byte offset). */
export interface LogSpoolRef {
  host: string;
  path: string;
  worker: string;
  partEnd: number;
}

/** One part of the log's multipart upload, with the stream id of the last event it holds. */
export interface UploadedPart {
  partNumber: number;
  etag: string;
  lastId: string;
}

/** A context waiting for its upload: its content-addressed key and its spool on one host. */
export interface PendingContext {
  key: string;
  spool: string;
  host: string;
}

/** Everything still to upload for one build, durable in Redis so that any worker can finish it. */
export interface UploadState {
  spool?: LogSpoolRef;
  multipart?: { uploadId: string; parts: UploadedPart[] };
  context?: PendingContext;
}

/** kept while a build's uploads are unfinished (an abandoned one is forgotten after this) */
const STATE_TTL_SECONDS = 14 * 24 * 3600;

/** KEYS: lease. ARGV: owner, ttl ms. Takes a free lease or renews one's own. */
const CLAIM_LEASE = `
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`;
const RELEASE_LEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * The uploads builds still owe, in Redis: per build what is left (log spool, multipart parts,
 * context), a set of the builds whose archiving has started and not finished, and a lease per
 * build so that exactly one worker uploads it at a time (the owner while it lives; after it
 * dies, whichever worker's sweeper takes the lapsed lease).
 */
export class PendingUploads {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = "m1l0:",
  ) {}

  stateKey(id: string): string {
    return `${this.prefix}upload:${id}`;
  }
  private leaseKey(id: string): string {
    return `${this.prefix}upload:${id}:lease`;
  }
  private get pendingKey(): string {
    return `${this.prefix}uploads:pending`;
  }

  async get(id: string): Promise<UploadState> {
    const fields = await this.redis.hgetall(this.stateKey(id));
    const state: UploadState = {};
    if (fields.spool) state.spool = JSON.parse(fields.spool) as LogSpoolRef;
    if (fields.multipart) state.multipart = JSON.parse(fields.multipart) as NonNullable<UploadState["multipart"]>;
    if (fields.context) state.context = JSON.parse(fields.context) as PendingContext;
    return state;
  }

  async set(id: string, patch: Partial<UploadState>): Promise<void> {
    const fields = Object.entries(patch).flatMap(([name, value]) => (value === undefined ? [] : [name, JSON.stringify(value)]));
    if (fields.length === 0) return;
    await this.redis.multi().hset(this.stateKey(id), ...fields).expire(this.stateKey(id), STATE_TTL_SECONDS).exec();
  }

  async clear(id: string, field: keyof UploadState): Promise<void> {
    await this.redis.hdel(this.stateKey(id), field);
  }

  /** The build's archiving has started: until done(), some worker must finish it. */
  async markPending(id: string): Promise<void> {
    await this.redis.zadd(this.pendingKey, "NX", Date.now(), id);
  }

  async isPending(id: string): Promise<boolean> {
    return (await this.redis.zscore(this.pendingKey, id)) !== null;
  }

  /** Oldest first. */
  async pending(limit = 100): Promise<string[]> {
    return this.redis.zrange(this.pendingKey, "0", String(limit - 1));
  }

  /** Everything is uploaded: forget the build's state. */
  async done(id: string): Promise<void> {
    await this.redis.multi().zrem(this.pendingKey, id).del(this.stateKey(id)).exec();
  }

  /** Takes the build's upload lease for `ttlMs` (or renews it); false while another worker holds it. */
  async claim(id: string, owner: string, ttlMs: number): Promise<boolean> {
    return ((await this.redis.eval(CLAIM_LEASE, 1, this.leaseKey(id), owner, String(ttlMs))) as number) === 1;
  }

  async release(id: string, owner: string): Promise<void> {
    await this.redis.eval(RELEASE_LEASE, 1, this.leaseKey(id), owner);
  }
}
