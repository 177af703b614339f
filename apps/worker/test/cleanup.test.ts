import type { BuildRecord } from "@m1l0/config";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildIdOfWorkEntry, sweepWorkDir } from "../src/cleanup.js";

const logger = pino({ level: "silent" });
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const record = (id: string, status: BuildRecord["status"]) => ({ id, status }) as BuildRecord;

describe("work dir sweep", () => {
  it("recognises a build's fetch dir and context spool, and nothing else", () => {
    expect(buildIdOfWorkEntry("m1l0-bld_01abcdefgh0123456789abcdef-Xy12Zq")).toBe("bld_01abcdefgh0123456789abcdef");
    expect(buildIdOfWorkEntry("m1l0-context-bld_x1-0f8fad5b-d9cb-469f-a165-70867728950e.tar.gz")).toBe("bld_x1");
    expect(buildIdOfWorkEntry("m1l0-artifacts")).toBeUndefined();
    expect(buildIdOfWorkEntry("other-bld_x-abcdef")).toBeUndefined();
  });

  it("removes entries of finished builds and of builds no worker holds; keeps held, running-here, still-uploading and unknown ones", async () => {
    const workDir = mkdtempSync(path.join(tmpdir(), "m1l0-sweep-test-"));
    dirs.push(workDir);
    const entries = {
      finished: "m1l0-bld_done-aaaaaa",
      orphaned: "m1l0-bld_orphan-bbbbbb",
      held: "m1l0-bld_held-cccccc",
      here: "m1l0-bld_here-dddddd",
      uploading: "m1l0-bld_uploading-ffffff",
      unknown: "m1l0-secret-eeeeee",
    };
    for (const name of Object.values(entries)) mkdirSync(path.join(workDir, name));
    const spool = "m1l0-context-bld_done-0f8fad5b-d9cb-469f-a165-70867728950e.tar.gz";
    writeFileSync(path.join(workDir, spool), "x");
    const records: Record<string, BuildRecord> = {
      bld_done: record("bld_done", "succeeded"),
      bld_orphan: record("bld_orphan", "building"),
      bld_held: record("bld_held", "building"),
      bld_here: record("bld_here", "building"),
      bld_uploading: record("bld_uploading", "succeeded"),
    };
    const uploadingSpool = "m1l0-context-bld_uploading-0f8fad5b-d9cb-469f-a165-70867728950e.tar.gz";
    writeFileSync(path.join(workDir, uploadingSpool), "x");
    const removed = await sweepWorkDir({
      workDir,
      getRecord: async (id) => records[id],
      isHeld: async (id) => id === "bld_held",
      // its spool is what another worker's sweeper would upload: kept
      hasPendingUploads: async (id) => id === "bld_uploading",
      runningHere: () => ["bld_here"],
      logger,
    });
    expect(removed.sort()).toEqual([entries.finished, entries.orphaned, spool].sort());
    expect(readdirSync(workDir).sort()).toEqual([entries.held, entries.here, entries.unknown, entries.uploading, uploadingSpool].sort());
  });
});
