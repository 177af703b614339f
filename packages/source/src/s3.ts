import path from "node:path";
import { BuilderError, formatBytes } from "@m1l0/config";
import { getObjectStream } from "@m1l0/storage";
import { extractTarGz } from "./archive.js";
import { describeSource } from "./describe.js";
import { DEFAULT_ARCHIVE_LIMITS, type ArchiveLimits, type FetchSourceOptions, type FetchedSource } from "./types.js";

/** s3://bucket/key.tar.gz → bucket and (decoded) key. */
export function parseS3Source(source: string): { bucket: string; key: string } {
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    url = new URL("s3://");
  }
  let key: string;
  try {
    key = decodeURIComponent(url.pathname.replace(/^\/+/, ""));
  } catch {
    key = "";
  }
  if (url.protocol !== "s3:" || !url.hostname || !key) {
    throw new BuilderError("VALIDATION_FAILED", `invalid s3 source ${describeSource(source)}: expected s3://bucket/key.tar.gz`, {
      issues: [{ field: "source", message: "must be s3://bucket/key.tar.gz" }],
    });
  }
  return { bucket: url.hostname, key };
}

/** Streams s3://bucket/key.tar.gz through gunzip and a checking tar extractor into `workDir`. */
export async function fetchS3(options: FetchSourceOptions): Promise<FetchedSource> {
  const { bucket, key } = parseS3Source(options.source);
  if (!options.s3) {
    throw new BuilderError("SOURCE_NOT_ALLOWED", "s3 sources are not enabled on this worker (no S3 client configured)");
  }
  const limits: ArchiveLimits = { ...DEFAULT_ARCHIVE_LIMITS, ...options.limits };
  const shown = `s3://${bucket}/${key}`;
  const dir = path.resolve(options.workDir);
  options.signal?.throwIfAborted();

  const { body, size } = await getObjectStream(options.s3.client, bucket, key, options.signal);
  if (size !== undefined && size > limits.maxCompressedBytes) {
    body.destroy();
    throw new BuilderError("ARCHIVE_INVALID", `${shown} is ${formatBytes(size)}, over the ${formatBytes(limits.maxCompressedBytes)} limit for compressed archives`);
  }
  options.onLog?.(`downloading ${shown}${size === undefined ? "" : ` (${formatBytes(size)})`}`);
  const stats = await extractTarGz(body, dir, { limits, label: shown, ...(options.signal ? { signal: options.signal } : {}) });
  const links = stats.symlinks ? `, ${stats.symlinks} symlinks` : "";
  options.onLog?.(`extracted ${stats.files} files, ${stats.directories} directories${links} (${formatBytes(stats.bytes)})`);
  return { kind: "s3", root: dir };
}
