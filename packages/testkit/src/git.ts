import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { services } from "./services.js";

/** A bare repo served by the git server (scripts/services.sh), made from a directory plus edits, on branch main. */
export function createGitFixture(sourceDir: string, edits: Record<string, string> = {}, name = `e2e-${randomUUID()}`): { url: string; dir: string; cleanup(): void } {
  const work = mkdtempSync(path.join(tmpdir(), "m1l0-fixture-"));
  try {
    cpSync(sourceDir, work, { recursive: true });
    for (const [file, content] of Object.entries(edits)) {
      mkdirSync(path.dirname(path.join(work, file)), { recursive: true });
      writeFileSync(path.join(work, file), content);
    }
    const git = (...args: string[]) => execFileSync("git", ["-c", "user.name=m1l0-test", "-c", "user.email=m1l0-test@localhost", ...args], { cwd: work, stdio: "pipe" });
    git("init", "-q", "-b", "main");
    git("add", "-A");
    git("commit", "-q", "-m", "fixture");
    const parent = path.join(services.gitFixturesDir, name);
    const bare = path.join(parent, "repo.git");
    mkdirSync(parent, { recursive: true });
    execFileSync("git", ["clone", "-q", "--bare", work, bare]);
    execFileSync("git", ["-C", bare, "symbolic-ref", "HEAD", "refs/heads/main"]);
    return { url: `${services.gitServerUrl}/${name}/repo.git`, dir: parent, cleanup: () => rmSync(parent, { recursive: true, force: true }) };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
