import { mkdir, realpath, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { fetchSource, type SourcePolicy } from "../src/index.js";
import { listTree, rejection, scratch } from "./helpers.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** <base>/roots/allowed/project (a directory with a file), <base>/elsewhere/other, and an empty workDir. */
async function layout() {
  const area = await scratch();
  cleanups.push(area.cleanup);
  const base = await realpath(area.base);
  const allowed = path.join(base, "roots", "allowed");
  const project = path.join(allowed, "project");
  const elsewhere = path.join(base, "elsewhere", "other");
  await mkdir(project, { recursive: true });
  await mkdir(elsewhere, { recursive: true });
  await writeFile(path.join(project, "main.py"), "print('dir')\n");
  await writeFile(path.join(allowed, "file.txt"), "not a dir\n");
  await symlink(elsewhere, path.join(allowed, "sneaky"));
  return { workDir: area.workDir, allowed, project, elsewhere };
}

function fetchDir(dir: string, workDir: string, policy: SourcePolicy) {
  return fetchSource({ source: `dir://${dir}`, workDir, policy });
}

describe("dir sources", () => {
  it("uses the directory in place when allowed", async () => {
    const { workDir, project } = await layout();
    const fetched = await fetchDir(project, workDir, { allowHttp: false, allowDir: true });
    expect(fetched).toEqual({ kind: "dir", root: project });
    expect(await listTree(workDir)).toEqual([]);
  });

  it("refuses dir sources unless the policy allows them", async () => {
    const { workDir, project } = await layout();
    const error = await rejection(fetchDir(project, workDir, { allowHttp: true, allowDir: false }));
    expect(error.code).toBe("SOURCE_NOT_ALLOWED");
    expect(error.message).toContain("dir sources are disabled");
  });

  it("accepts a directory inside one of the dirRoots", async () => {
    const { workDir, allowed, project } = await layout();
    const fetched = await fetchDir(project, workDir, { allowHttp: false, allowDir: true, dirRoots: ["/nonexistent-root", allowed] });
    expect(fetched.root).toBe(project);
  });

  it("refuses a directory outside the dirRoots, including through a symlink", async () => {
    const { workDir, allowed, elsewhere } = await layout();
    const policy = { allowHttp: false, allowDir: true, dirRoots: [allowed] };
    const outside = await rejection(fetchDir(elsewhere, workDir, policy));
    expect(outside.code).toBe("SOURCE_NOT_ALLOWED");
    expect(outside.message).toContain("outside the directories this worker may build from");
    const viaLink = await rejection(fetchDir(path.join(allowed, "sneaky"), workDir, policy));
    expect(viaLink.code).toBe("SOURCE_NOT_ALLOWED");
    const dotdot = await rejection(fetchDir(`${allowed}/../../elsewhere/other`, workDir, policy));
    expect(dotdot.code).toBe("SOURCE_NOT_ALLOWED");
    const missingOutside = await rejection(fetchDir("/definitely/not/here", workDir, policy));
    expect(missingOutside.code).toBe("SOURCE_NOT_ALLOWED");
  });

  it("fails with SOURCE_NOT_FOUND for a missing path or a file", async () => {
    const { workDir, allowed } = await layout();
    const policy = { allowHttp: false, allowDir: true, dirRoots: [allowed] };
    const missing = await rejection(fetchDir(path.join(allowed, "nope"), workDir, policy));
    expect(missing.code).toBe("SOURCE_NOT_FOUND");
    expect(missing.message).toContain("does not exist");
    const file = await rejection(fetchDir(path.join(allowed, "file.txt"), workDir, policy));
    expect(file.code).toBe("SOURCE_NOT_FOUND");
    expect(file.message).toContain("is not a directory");
  });
});
