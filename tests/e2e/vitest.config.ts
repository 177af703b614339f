import { defineProject } from "vitest/config";

// End-to-end: spawns the built API and worker processes against the real services.
export default defineProject({
  resolve: { conditions: ["source"] },
  ssr: { resolve: { conditions: ["source"], externalConditions: ["source"] } },
  test: { include: ["test/**/*.test.ts"], testTimeout: 600_000, hookTimeout: 300_000 },
});
