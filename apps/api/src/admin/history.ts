import { BUILD_ID_PATTERN, BUILD_STATUSES, BuilderError, type BuildRecord, type BuildStatus } from "@m1l0/config";
import type { BuildStore, StoredEvent } from "@m1l0/queue";
import { artifactKeys, type ArtifactStore } from "@m1l0/storage";
import type { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { readHistoryPage, type HistoryPage, type HistoryPageOptions } from "./history-page.js";

/**
 * Build records and logs that outlive Redis retention: Redis first (live, current), then the
 * archived copies the workers wrote to the artifact store (records/<id>.json, logs/<id>.log).
 */
export class BuildHistory {
  constructor(
    private readonly store: BuildStore,
    private readonly artifacts: ArtifactStore | undefined,
  ) {}

  async get(id: string): Promise<BuildRecord | undefined> {
    return (await this.store.get(id)) ?? (await this.archivedRecord(id));
  }

  async require(id: string): Promise<BuildRecord> {
    const record = await this.get(id);
    if (!record) throw new BuilderError("NOT_FOUND", `build ${id} not found`);
    return record;
  }

  /**
   * One page of builds, newest first, from Redis and the archive alike (each build once);
   * `next` is where the following page starts (encode it as the cursor).
   */
  async page(options: HistoryPageOptions): Promise<HistoryPage> {
    return readHistoryPage(this.store, this.artifacts ? (id) => this.archivedRecord(id) : undefined, this.artifacts, options);
  }

  /** The archived log (complete, written when the build ended), or undefined. */
  async archivedLog(id: string): Promise<Readable | undefined> {
    if (!BUILD_ID_PATTERN.test(id)) return undefined;
    return this.artifacts?.get(artifactKeys.log(id));
  }

  /** The archived log once the Redis stream is gone (expired or trimmed away); undefined while Redis has it. */
  async logIfForgotten(id: string): Promise<Readable | undefined> {
    const live = await this.store.readEvents(id, "0", { count: 1 });
    return live.length === 0 ? this.archivedLog(id) : undefined;
  }

  /**
   * A build's events after `afterId`, to its final status: the Redis stream (live, waiting
   * for new events) while it exists, else the archived log's. Every protocol follows through here.
   */
  async *events(id: string, afterId: string, signal?: AbortSignal): AsyncGenerator<StoredEvent> {
    const archived = await this.logIfForgotten(id);
    yield* archived ? archivedEvents(archived, afterId) : this.store.follow(id, afterId, signal);
  }

  private async archivedRecord(id: string): Promise<BuildRecord | undefined> {
    // ids become object keys / file names: anything else cannot have been archived
    if (!BUILD_ID_PATTERN.test(id)) return undefined;
    const body = await this.artifacts?.get(artifactKeys.record(id));
    return body ? (JSON.parse(await text(body)) as BuildRecord) : undefined;
  }
}

const ARCHIVED_LINE = /^(\S+) \[(fetch|build|push|status)\] (.*)$/;

/**
 * Turns an archived log back into events for SSE clients that follow a build whose Redis
 * stream is gone. Ids are `archived-<line number>`, so Last-Event-ID resumes there too.
 */
export async function* archivedEvents(log: Readable, afterId: string): AsyncGenerator<StoredEvent> {
  const skip = /^archived-(\d+)$/.exec(afterId)?.[1];
  let number = 0;
  let pending = "";
  const lines = async function* () {
    for await (const chunk of log) {
      pending += (chunk as Buffer).toString("utf8");
      const parts = pending.split("\n");
      pending = parts.pop() ?? "";
      yield* parts;
    }
    if (pending) yield pending;
  };
  for await (const line of lines()) {
    number += 1;
    if (skip !== undefined && number <= Number(skip)) continue;
    const match = ARCHIVED_LINE.exec(line);
    if (!match) continue;
    const [, at = "", phase, rest = ""] = match;
    const id = `archived-${number}`;
    if (phase === "status") {
      const status = rest.split(":")[0] as BuildStatus;
      if ((BUILD_STATUSES as readonly string[]).includes(status)) yield { id, event: { type: "status", status, at } };
    } else {
      yield { id, event: { type: "log", phase: phase as "fetch" | "build" | "push", line: rest, at } };
    }
  }
}
