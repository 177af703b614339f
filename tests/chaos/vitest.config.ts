import { defineProject } from "vitest/config";

// Chaos: kills workers, restarts Redis, stops a daemon and a registry, floods the queue —
// against the real stack (spawned apps/*/dist) and private instances of the services stopped.
export default defineProject({
  resolve: { conditions: ["source"] },
  ssr: { resolve: { conditions: ["source"], externalConditions: ["source"] } },
  test: { include: ["test/**/*.test.ts"], testTimeout: 600_000, hookTimeout: 300_000 },
});
