import { defineConfig } from "vitest/config";

// One run over every workspace project so that CI gets a single pass/fail count.
export default defineConfig({
  test: {
    projects: ["packages/*", "apps/*", "tests/*", "bench"],
  },
});
