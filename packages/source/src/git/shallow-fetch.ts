import { BuilderError, formatBytes } from "@m1l0/config";
import { createHash } from "node:crypto";
import { mkdir, open } from "node:fs/promises";
import path from "node:path";
import { indexPack } from "./pack-index.js";
import type { GitProgressEvent } from "isomorphic-git";
import type { PackReader } from "./pack.js";
import type { GitSession } from "./session.js";
import { UploadPackClient, type Advertisement } from "./upload-pack.js";

/** Pack bytes gathered before one write to disk (sideband packets are at most 64 KiB). */
const WRITE_BATCH_BYTES = 1024 * 1024;

export interface ShallowFetch {
  commit: string;
  /** the ref checked out: as named, or the default branch's name */
  ref: string | undefined;
  /** the fetched pack, indexed; the caller closes it */
  reader: PackReader;
}

/** What the server's advertisement offers a shallow fetch, or why it does not. */
function shallowCapabilities(advertisement: Advertisement): string[] | undefined {
  const offered = advertisement.capabilities;
  if (!offered.has("shallow")) return undefined;
  const sideband = offered.has("side-band-64k") ? "side-band-64k" : offered.has("side-band") ? "side-band" : undefined;
  if (!sideband) return undefined;
  // no thin-pack: nothing is here for deltas to refer to
  return [sideband, "shallow", ...["ofs-delta", "no-progress"].filter((capability) => offered.has(capability))];
}

/** The advertised ref a source names: a branch before a tag, as git's own resolution order has it. */
function chooseRef(advertisement: Advertisement, session: GitSession): { want: string; commit: string; ref: string | undefined } {
  const { ctx, parsed } = session;
  if (parsed.ref === undefined) {
    const head = advertisement.refs.get("HEAD");
    if (!head) throw new BuilderError("SOURCE_NOT_FOUND", `${ctx.shown} has no commits`);
    const branch = advertisement.head?.startsWith("refs/heads/") ? advertisement.head.slice("refs/heads/".length) : undefined;
    return { want: head, commit: head, ref: branch };
  }
  for (const name of [`refs/heads/${parsed.ref}`, `refs/tags/${parsed.ref}`, parsed.ref]) {
    const oid = advertisement.refs.get(name);
    // an annotated tag is fetched as itself (what the server lets us want); its commit is checked out
    if (oid) return { want: oid, commit: advertisement.peeled.get(name) ?? oid, ref: parsed.ref };
  }
  throw new BuilderError("SOURCE_NOT_FOUND", `ref '${parsed.ref}' not found in ${ctx.shown}: no branch or tag of that name`);
}

/**
 * A depth-1 clone of a named ref or the default branch, without isomorphic-git's fetch: the
 * pack streams to `<dir>/.git/fetch.pack` as it arrives (its SHA-1 trailer checked), is indexed
 * natively, and is read from there by the checkout. Undefined when the server does not offer
 * a shallow fetch over side-band (the caller then uses isomorphic-git's full clone).
 */
export async function fetchShallow(
  session: GitSession,
  options: { limit: number; onProgress: (event: GitProgressEvent) => void },
): Promise<ShallowFetch | undefined> {
  const client = new UploadPackClient(session);
  const advertisement = await client.advertisement();
  const { want, commit, ref } = chooseRef(advertisement, session);
  const capabilities = shallowCapabilities(advertisement);
  if (!capabilities) return undefined;

  const gitDir = path.join(session.ctx.dir, ".git");
  await mkdir(gitDir, { recursive: true });
  const handle = await open(path.join(gitDir, "fetch.pack"), "w+");
  try {
    const received = await receivePack(client, handle, want, capabilities);
    session.ctx.log(`received a pack of ${formatBytes(received)}`);
    const { reader } = await indexPack(handle, { limit: options.limit, signal: session.signal, onProgress: options.onProgress });
    if ((await reader.readObject(commit))?.type !== 1) {
      throw new BuilderError("SOURCE_FETCH_FAILED", `the pack ${session.ctx.host} sent for ${session.ctx.shown} does not hold commit ${commit}`, { retryable: true });
    }
    return { commit, ref, reader };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

/** Writes the pack to `handle` in batches, checking its trailer (SHA-1 of all that precedes it). */
async function receivePack(client: UploadPackClient, handle: Awaited<ReturnType<typeof open>>, want: string, capabilities: string[]): Promise<number> {
  const hash = createHash("sha1");
  let batch: Buffer[] = [];
  let batchBytes = 0;
  let written = 0;
  // the last 20 bytes seen are held back from the hash: at the end they are the trailer
  let tail = Buffer.alloc(0);
  const flush = async () => {
    if (batchBytes === 0) return;
    const data = Buffer.concat(batch, batchBytes);
    batch = [];
    batchBytes = 0;
    await handle.write(data, 0, data.length, written);
    written += data.length;
  };
  await client.fetchShallow(want, capabilities, async (chunk) => {
    if (chunk.length >= 20) {
      hash.update(tail);
      hash.update(chunk.subarray(0, chunk.length - 20));
      tail = Buffer.from(chunk.subarray(chunk.length - 20));
    } else {
      const joined = Buffer.concat([tail, chunk]);
      const keep = Math.min(20, joined.length);
      hash.update(joined.subarray(0, joined.length - keep));
      tail = joined.subarray(joined.length - keep);
    }
    batch.push(chunk);
    batchBytes += chunk.length;
    if (batchBytes >= WRITE_BATCH_BYTES) await flush();
  });
  await flush();
  if (tail.length !== 20 || !hash.digest().equals(tail)) {
    throw new BuilderError("SOURCE_FETCH_FAILED", `the pack's checksum does not match what was received (${written} bytes): the connection or the server corrupted it`, { retryable: true });
  }
  return written;
}
