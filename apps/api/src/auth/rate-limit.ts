import type { Redis } from "ioredis";

export interface RateLimitSettings {
  /** submissions per window and token; 0 = unlimited */
  max: number;
  windowMs: number;
}

export interface RateLimitResult {
  /** submissions counted in the current window, this one included */
  current: number;
  /** milliseconds until the window resets */
  ttlMs: number;
  allowed: boolean;
  /** whole seconds a refused caller should wait (Retry-After) */
  retryAfterSeconds: number;
}

// fixed window: the first hit starts it, every hit counts; atomic, so replicas share one budget
const HIT_SCRIPT = `
local current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {current, ttl}
`;

type RedisWithHit = Redis & { m1l0SubmitHit(key: string, windowMs: number): Promise<[number, number]> };

/**
 * Per-token build-submission budget in Redis, one counter per token name
 * (`<prefix>ratelimit:submit:<name>`): REST POST /builds and gRPC Build draw from the same
 * counter on every API replica. Keys hold token names, never tokens.
 */
export class SubmissionRateLimiter {
  private readonly redis: RedisWithHit;

  constructor(
    redis: Redis,
    private readonly prefix: string,
    readonly settings: RateLimitSettings,
  ) {
    this.redis = redis as RedisWithHit;
    if (typeof this.redis.m1l0SubmitHit !== "function") redis.defineCommand("m1l0SubmitHit", { numberOfKeys: 1, lua: HIT_SCRIPT });
  }

  get enabled(): boolean {
    return this.settings.max > 0;
  }

  key(name: string): string {
    return `${this.prefix}ratelimit:submit:${name}`;
  }

  /** Counts one submission by `name`. */
  async hit(name: string): Promise<RateLimitResult> {
    if (!this.enabled) return { current: 0, ttlMs: 0, allowed: true, retryAfterSeconds: 0 };
    const [current, ttlMs] = await this.redis.m1l0SubmitHit(this.key(name), this.settings.windowMs);
    return { current, ttlMs, allowed: current <= this.settings.max, retryAfterSeconds: Math.max(1, Math.ceil(ttlMs / 1000)) };
  }
}

/**
 * The limiter as an @fastify/rate-limit store (the plugin sets X-RateLimit-* and Retry-After
 * headers and answers 429); `key` is what the route's keyGenerator returns: the token name.
 */
export function rateLimitStore(limiter: SubmissionRateLimiter) {
  return class SubmissionStore {
    incr(key: string, callback: (error: Error | null, result?: { current: number; ttl: number }) => void): void {
      limiter.hit(key).then(
        (result) => callback(null, { current: result.current, ttl: result.ttlMs }),
        (error: Error) => callback(error),
      );
    }

    child(): SubmissionStore {
      return new SubmissionStore();
    }
  };
}
