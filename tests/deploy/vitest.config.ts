import { defineProject } from "vitest/config";

// Deployment: the service's own images under docker-compose and on a multi-node Docker Swarm
// made of node containers, each with its own nested dockerd. Files run one after another
// (they share the host's daemon and build the same images).
export default defineProject({
  resolve: { conditions: ["source"] },
  ssr: { resolve: { conditions: ["source"], externalConditions: ["source"] } },
  test: { include: ["test/**/*.test.ts"], testTimeout: 900_000, hookTimeout: 600_000, fileParallelism: false },
});
