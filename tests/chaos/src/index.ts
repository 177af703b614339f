import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { afterAll } from "vitest";
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

export interface ChaosFile {
  /** unique per run: build revisions, worker ids and markers carry it */
  run: string;
  /** run after the file's tests (source repos, temp files) */
  cleanups: Array<() => void>;
  /** a temp dir removed after the file's tests */
  workDir(label: string): string;
}

/** A chaos test file's scaffolding; what it creates is removed after the file's tests. */
export function chaosFile(): ChaosFile {
  const cleanups: Array<() => void> = [];
  afterAll(() => {
    for (const cleanup of cleanups.splice(0)) cleanup();
  });
  return {
    run: Date.now().toString(36),
    cleanups,
    workDir(label) {
      const dir = mkdtempSync(path.join(tmpdir(), `m1l0-chaos-${label}-`));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      return dir;
    },
  };
}

export const seconds = (ms: number) => (ms / 1000).toFixed(1);
