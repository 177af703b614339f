import { defineProject } from "vitest/config";

export default defineProject({
  resolve: { conditions: ["source"] },
  ssr: { resolve: { conditions: ["source"], externalConditions: ["source"] } },
  // --expose-gc: the deadline tests force garbage collection (see @m1l0/testkit withGcPressure)
  test: { include: ["test/**/*.test.ts"], testTimeout: 60_000, hookTimeout: 120_000, execArgv: ["--expose-gc"] },
});
