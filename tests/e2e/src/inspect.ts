import Docker from "dockerode";
import { Redis } from "ioredis";
import { appendFileSync, mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import { apiFetch, type BuildRecordView } from "./client.js";
import { scanKeys } from "./images.js";
import { ROOT_DIR } from "./stack.js";

/** What tests look at after builds: final answers, leftovers on daemons, disks and Redis. */
export const TERMINAL = ["succeeded", "failed", "cancelled", "cached"];
export const isTerminal = (record: BuildRecordView) => TERMINAL.includes(record.status);

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns something truthy, or throws after `timeoutMs`. */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, intervalMs = 100, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`);
    await sleep(intervalMs);
  }
}

/** The status events of a build's stream, in order, as the API serves the log. */
export async function statusEvents(apiUrl: string, id: string): Promise<string[]> {
  const log = await (await apiFetch(`${apiUrl}/builds/${id}/logs`)).text();
  return log
    .split("\n")
    .map((line) => /\[status\] (\w+)/.exec(line)?.[1])
    .filter((status): status is string => status !== undefined);
}

/** Terminal status events of a build's stream: the orchestrator's "answers" (exactly one expected). */
export async function terminalEvents(apiUrl: string, id: string): Promise<string[]> {
  return (await statusEvents(apiUrl, id)).filter((status) => TERMINAL.includes(status));
}

/** Containers (running or not) on a daemon whose command carries the marker: what a build's RUN/LABEL step left behind. */
export async function containersWith(marker: string, socketPath = "/var/run/docker.sock"): Promise<string[]> {
  const containers = await new Docker({ socketPath }).listContainers({ all: true });
  return containers.filter((container) => container.Command.includes(marker)).map((container) => container.Id);
}

/** Entries of a work dir that belong to a build (fetch dirs `m1l0-<id>-*`, context spools). */
export function workEntriesOf(workDir: string, id: string): string[] {
  return readdirSync(workDir).filter((name) => name.includes(id));
}

/** Images on a daemon owned by a stack's image cache (see apps/worker/src/cleanup.ts). */
export async function cachedImages(scope: string, socketPath = "/var/run/docker.sock"): Promise<Docker.ImageInfo[]> {
  return new Docker({ socketPath }).listImages({ filters: JSON.stringify({ label: [`ai.m1l0.image-cache=${scope}`] }) } as Docker.ListImagesOptions);
}

/** Prints a test's figures and appends them to test-results/chaos-figures.txt. */
export function reportFigures(test: string, line: string): void {
  const text = `${test}: ${line}`;
  console.log(text);
  const file = path.join(ROOT_DIR, "test-results", "chaos-figures.txt");
  mkdirSync(path.dirname(file), { recursive: true });
  appendFileSync(file, `${new Date().toISOString()} ${text}\n`);
}

export interface KeyAudit {
  /** every key seen, by kind */
  counts: Record<string, number>;
  /** keys that fit no allowed kind, or lack the TTL their kind needs */
  orphans: string[];
}

const BULL_QUEUE_KEYS = new Set(["meta", "events", "completed", "failed", "wait", "active", "delayed", "stalled", "stalled-check", "id", "marker", "prioritized", "pc", "paused", "limiter", "repeat", "de", "waiting-children", "metrics:completed", "metrics:failed", "metrics:completed:data", "metrics:failed:data"]);

/**
 * Lists every Redis key of a stack (its REDIS_KEY_PREFIX namespace and its BullMQ queue)
 * and checks each is accounted for: a finished build's record or event stream with a TTL,
 * the index, another prefixed key with a TTL, a queue bookkeeping key, or the hash of a job
 * BullMQ retains as completed/failed. Job locks and jobs in no state are orphans.
 */
export async function auditRedisKeys(redisUrl: string, keyPrefix: string, queueName: string): Promise<KeyAudit> {
  const redis = new Redis(redisUrl);
  try {
    const scan = (pattern: string) => scanKeys(redis, pattern);
    const counts: Record<string, number> = {};
    const orphans: string[] = [];
    const count = (kind: string) => (counts[kind] = (counts[kind] ?? 0) + 1);
    const ttls = async (keys: string[]) => {
      const pipeline = redis.pipeline();
      for (const key of keys) pipeline.ttl(key);
      return ((await pipeline.exec()) ?? []).map(([, ttl]) => Number(ttl));
    };
    const prefixed = await scan(`${keyPrefix}*`);
    const prefixedTtls = await ttls(prefixed);
    prefixed.forEach((key, index) => {
      const rest = key.slice(keyPrefix.length);
      const ttl = prefixedTtls[index]!;
      // -2: the key went away between the scan and the TTL read (an upload finishing, say): not left behind
      if (ttl === -2) return;
      if (rest === "builds") return void count("index");
      // builds whose uploads are unfinished: an entry leaves once its build is archived
      if (rest === "uploads:pending") return void count("pending-uploads");
      const kind = /^build:[^:]+:events$/.test(rest) ? "events" : /^build:[^:]+$/.test(rest) ? "record" : `${rest.split(":")[0]}-key`;
      count(kind);
      if (ttl === -1) orphans.push(`${key} (${kind} without TTL)`);
    });
    const bullPrefix = `bull:${queueName}:`;
    const bull = await scan(`${bullPrefix}*`);
    const retained = new Set([...(await redis.zrange(`${bullPrefix}completed`, "0", "-1")), ...(await redis.zrange(`${bullPrefix}failed`, "0", "-1"))]);
    for (const key of bull) {
      const rest = key.slice(bullPrefix.length);
      if (BULL_QUEUE_KEYS.has(rest)) {
        count("queue");
        continue;
      }
      const job = /^([^:]+)(?::(logs|lock|dependencies|processed|failed|unsuccessful))?$/.exec(rest);
      if (job && retained.has(job[1]!) && job[2] !== "lock") {
        count("retained-job");
        continue;
      }
      count("orphan");
      orphans.push(key);
    }
    return { counts, orphans };
  } finally {
    redis.disconnect();
  }
}
