import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { afterAll, describe, expect, it } from "vitest";
import { LocalArtifactStore, MULTIPART_MIN_PART_BYTES, S3ArtifactStore, createS3Client, deleteObject, type ArtifactStore, type MultipartPart } from "../src/index.js";

const endpoint = process.env.S3_ENDPOINT ?? "http://127.0.0.1:4569";
const bucket = process.env.S3_BUCKET ?? "m1l0-builds";
const client = createS3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } });
const s3Prefix = `test/artifacts/${randomUUID()}/`;
const localDir = mkdtempSync(path.join(tmpdir(), "m1l0-artifacts-test-"));
const written: string[] = [];

afterAll(async () => {
  for (const key of written) await deleteObject(client, bucket, s3Prefix + key).catch(() => undefined);
  client.destroy();
  rmSync(localDir, { recursive: true, force: true });
});

const stores: Array<[string, ArtifactStore]> = [
  ["S3 (s3rver)", new S3ArtifactStore(client, bucket, s3Prefix)],
  ["local folder", new LocalArtifactStore(localDir)],
];

describe.each(stores)("ArtifactStore: %s", (_name, store) => {
  it("assembles a multipart upload in part order; the object appears only at completion, and completing again is harmless", async () => {
    written.push("logs/multi.log");
    const parts = [Buffer.alloc(MULTIPART_MIN_PART_BYTES, "a"), Buffer.alloc(MULTIPART_MIN_PART_BYTES, "b"), Buffer.from("the end\n")];
    const uploadId = await store.startMultipart("logs/multi.log", "text/plain");
    const etags: MultipartPart[] = [];
    for (const [index, body] of parts.entries()) etags.push({ partNumber: index + 1, etag: await store.putPart("logs/multi.log", uploadId, index + 1, body) });
    // a part sent again (a retry after a lost answer) replaces itself
    etags[1] = { partNumber: 2, etag: await store.putPart("logs/multi.log", uploadId, 2, parts[1]!) };
    expect(await store.exists("logs/multi.log")).toBe(false);
    await store.completeMultipart("logs/multi.log", uploadId, etags);
    const stored = Buffer.from(await text((await store.get("logs/multi.log"))!));
    expect(stored.equals(Buffer.concat(parts))).toBe(true);
    await store.completeMultipart("logs/multi.log", uploadId, etags);
    expect(await store.listKeys("logs/multi", { limit: 10 })).toEqual(["logs/multi.log"]);
  });

  it("stores strings and streams, reports existence, and answers undefined for missing keys", async () => {
    written.push("logs/a.log", "contexts/abc.tar.gz");
    expect(await store.exists("logs/a.log")).toBe(false);
    expect(await store.get("logs/a.log")).toBeUndefined();
    await store.put("logs/a.log", "line 1\nline 2\n", "text/plain");
    expect(await store.exists("logs/a.log")).toBe(true);
    expect(await text((await store.get("logs/a.log"))!)).toBe("line 1\nline 2\n");
    const chunks = Array.from({ length: 3 }, (_, i) => Buffer.alloc(1024 * 1024, i));
    await store.put("contexts/abc.tar.gz", Readable.from(chunks));
    const body = await store.get("contexts/abc.tar.gz");
    const received: Buffer[] = [];
    for await (const chunk of body!) received.push(chunk as Buffer);
    expect(Buffer.concat(received).equals(Buffer.concat(chunks))).toBe(true);
  });

  it("lists keys under a prefix in ascending byte order, after a key, up to a limit", async () => {
    // written out of order: the listing order is the keys' own, never the write order
    // (no key here is a prefix of another: s3rver orders those by its file names, not as S3 does;
    // the record index never relies on that, see record-index.ts)
    const ids = ["r3", "r1a", "r10", "r2", "r1-x", "r1.y"];
    for (const id of ids) {
      written.push(`list/${id}`);
      await store.put(`list/${id}`, "");
    }
    written.push("listed-elsewhere/r0");
    await store.put("listed-elsewhere/r0", "");
    expect(await store.listKeys("list/", { limit: 10 })).toEqual(["list/r1-x", "list/r1.y", "list/r10", "list/r1a", "list/r2", "list/r3"]);
    expect(await store.listKeys("list/", { limit: 2 })).toEqual(["list/r1-x", "list/r1.y"]);
    expect(await store.listKeys("list/", { limit: 2, startAfter: "list/r1.y" })).toEqual(["list/r10", "list/r1a"]);
    // a startAfter between keys (not itself a key) works the same way
    expect(await store.listKeys("list/", { limit: 10, startAfter: "list/r1b" })).toEqual(["list/r2", "list/r3"]);
    expect(await store.listKeys("list/r1", { limit: 10 })).toEqual(["list/r1-x", "list/r1.y", "list/r10", "list/r1a"]);
    expect(await store.listKeys("list/", { limit: 10, startAfter: "list/r3" })).toEqual([]);
    expect(await store.listKeys("nothing-here/", { limit: 10 })).toEqual([]);
    await expect(store.listKeys("list/", { limit: 1001 })).rejects.toThrow(/limit/);
  });

  it("lists keys in nested folders in key order, skipping what lies before startAfter", async () => {
    const keys = ["tree/c", "tree/b0", "tree/a/y", "tree/b/z", "tree/a/x", "tree/b/a/deep"];
    for (const key of keys) {
      written.push(key);
      await store.put(key, "x");
    }
    const sorted = [...keys].sort();
    expect(sorted).toEqual(["tree/a/x", "tree/a/y", "tree/b/a/deep", "tree/b/z", "tree/b0", "tree/c"]);
    expect(await store.listKeys("tree/", { limit: 100 })).toEqual(sorted);
    expect(await store.listKeys("tree/", { limit: 3 })).toEqual(sorted.slice(0, 3));
    for (const [i, key] of sorted.entries()) expect(await store.listKeys("tree/", { limit: 100, startAfter: key })).toEqual(sorted.slice(i + 1));
    expect(await store.listKeys("tree/", { limit: 100, startAfter: "tree/a/" })).toEqual(sorted);
    expect(await store.listKeys("tree/", { limit: 100, startAfter: "tree/a0" })).toEqual(sorted.slice(2));
    expect(await store.listKeys("tree/b", { limit: 100 })).toEqual(sorted.slice(2, 5));
    expect(await store.listKeys("tree/b/", { limit: 1, startAfter: "tree/b/a/deep" })).toEqual(["tree/b/z"]);
  });
});

it("the local store refuses keys that leave its folder", async () => {
  await expect(new LocalArtifactStore(localDir).put("../escape.txt", "x")).rejects.toThrow(/leaves the store/);
});
