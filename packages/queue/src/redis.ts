import { Redis } from "ioredis";

export type RedisRole = "producer" | "worker";

/**
 * Producers (the API) fail fast while Redis is down instead of waiting for it; workers block on Redis (BullMQ requires maxRetriesPerRequest: null) and keep
 * reconnecting.
 */
export function createRedis(url: string, role: RedisRole): Redis {
  return new Redis(url, {
    lazyConnect: false,
    maxRetriesPerRequest: role === "worker" ? null : 1,
    // producers still queue commands while (re)connecting, but give up after one retry
    // or 3 s, so a request during an outage gets a prompt 503 instead of hanging
    ...(role === "producer" ? { commandTimeout: 3_000 } : {}),
    // concurrent requests' commands go out in one write per tick: fewer syscalls for the API and Redis
    ...(role === "producer" ? { enableAutoPipelining: true } : {}),
    connectTimeout: 5_000,
    retryStrategy: (times) => Math.min(times * 200, 2_000),
  });
}
