import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createGitFixture, services } from "@m1l0/testkit";

// The stack, the services and the git fixtures live in the test kit (packages/testkit), shared with chaos and bench.
export { ROOT_DIR, createGitFixture, createStackTokens, freePort, services, startStack, type RunningStack, type StackTokens } from "@m1l0/testkit";

/** A served git repo whose only file is a Dockerfile `FROM busybox` + `RUN echo <marker> && sleep <seconds>`. */
export function sleeperRepo(marker: string, seconds: number): { url: string; cleanup(): void } {
  const empty = mkdtempSync(path.join(tmpdir(), "m1l0-empty-"));
  try {
    return createGitFixture(empty, { Dockerfile: `FROM ${services.baseImageBusybox}\nRUN echo ${marker} && sleep ${seconds}\n` });
  } finally {
    rmSync(empty, { recursive: true, force: true });
  }
}
