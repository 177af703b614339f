import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

/** The three daemons of the test fleet (scripts/fleet.sh up 3 starts 2 and 3). */
export const FLEET_SOCKETS = ["/var/run/docker.sock", "/var/run/docker-w2.sock", "/var/run/docker-w3.sock"] as const;

export function requireFleet(): void {
  const missing = FLEET_SOCKETS.filter((socket) => !existsSync(socket));
  if (missing.length) throw new Error(`fleet daemons missing (${missing.join(", ")}): run \`bash scripts/fleet.sh up 3\` (scripts/test.sh does)`);
}

/**
 * Worker settings for chaos runs: short BullMQ locks so a killed worker's build is taken
 * over within seconds (production defaults: 60 s lock, 30 s stalled check), quick retries.
 */
export const CHAOS_WORKER_ENV: NodeJS.ProcessEnv = {
  WORKER_LOCK_DURATION_MS: "4000",
  WORKER_STALLED_INTERVAL_MS: "1000",
  PUSH_RETRY_DELAY_MS: "1000",
};

export function workDir(label: string): string {
  return mkdtempSync(path.join(tmpdir(), `m1l0-chaos-${label}-`));
}

export const seconds = (ms: number) => (ms / 1000).toFixed(1);
