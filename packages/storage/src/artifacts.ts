import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { CompleteMultipartUploadCommand, CreateMultipartUploadCommand, HeadObjectCommand, ListObjectsCommand, UploadPartCommand, type S3Client } from "@aws-sdk/client-s3";
import { createHash, randomUUID } from "node:crypto";
import { BuilderError } from "@m1l0/config";
import { createS3Client, type S3Settings } from "./client.js";
import { getObjectStream, putObject } from "./objects.js";

/** Where each kind of build artifact lives inside the store (the documented S3 layout). */
export const artifactKeys = {
  log: (buildId: string) => `logs/${buildId}.log`,
  /** `digest` is the hex sha256 of the uncompressed tar Docker received */
  context: (digest: string) => `contexts/${digest}.tar.gz`,
  record: (buildId: string) => `records/${buildId}.json`,
  recordsPrefix: "records/",
} as const;

/**
 * Port: the log/artifact store. The S3 implementation is used when a bucket is configured;
 * the local-folder one otherwise (single-host installs, development).
 */
export interface ArtifactStore {
  /** e.g. `s3://bucket/prefix` or `file:///var/lib/…`, for logs */
  readonly location: string;
  exists(key: string): Promise<boolean>;
  /** Streams go through multipart uploads on S3; the object appears only once complete. */
  put(key: string, body: Readable | Buffer | string, contentType?: string): Promise<void>;
  /** undefined when the key does not exist */
  get(key: string): Promise<Readable | undefined>;
  /**
   * Keys under `prefix` in ascending byte order (S3's own order), after `startAfter` when
   * given, at most `limit` (at most 1,000: one S3 list call). Fewer than `limit` means the end.
   * Newest-first listings come from key layouts that sort that way (see record-index.ts).
   */
  listKeys(prefix: string, options: ListKeysOptions): Promise<string[]>;
  /**
   * Multipart upload of one object written over time (a long build's log): parts of at least
   * MULTIPART_MIN_PART_BYTES but the last, numbered from 1; the object appears only at completion.
   */
  startMultipart(key: string, contentType?: string): Promise<string>;
  /** returns the part's ETag, which completeMultipart needs */
  putPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<string>;
  /** Idempotent: completing an upload that already completed succeeds when the object is there. */
  completeMultipart(key: string, uploadId: string, parts: readonly MultipartPart[]): Promise<void>;
}

export interface MultipartPart {
  partNumber: number;
  etag: string;
}

/** S3's smallest part (every part but the last). */
export const MULTIPART_MIN_PART_BYTES = 5 * 1024 * 1024;

export interface ListKeysOptions {
  /** exclusive: the first key returned sorts after this one */
  startAfter?: string;
  /** 1–1,000 */
  limit: number;
}

/** One ListObjectsV2 call answers at most this many keys. */
export const LIST_KEYS_MAX = 1000;

function listLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 1 || limit > LIST_KEYS_MAX) throw new BuilderError("INTERNAL", `listKeys limit must be an integer from 1 to ${LIST_KEYS_MAX} (got ${limit})`);
  return limit;
}

export class S3ArtifactStore implements ArtifactStore {
  readonly location: string;

  constructor(
    private readonly client: S3Client,
    private readonly bucket: string,
    /** optional key prefix, e.g. `m1l0/` to share a bucket */
    private readonly prefix = "",
  ) {
    this.location = `s3://${bucket}/${prefix}`;
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return true;
    } catch (error) {
      const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404 || (error as Error).name === "NotFound") return false;
      throw error;
    }
  }

  async put(key: string, body: Readable | Buffer | string, contentType?: string): Promise<void> {
    await putObject(this.client, this.bucket, this.prefix + key, body, contentType);
  }

  async get(key: string): Promise<Readable | undefined> {
    try {
      return (await getObjectStream(this.client, this.bucket, this.prefix + key)).body;
    } catch (error) {
      if (error instanceof BuilderError && error.code === "SOURCE_NOT_FOUND" && !/bucket .* does not exist/.test(error.message)) return undefined;
      throw error;
    }
  }

  async listKeys(prefix: string, options: ListKeysOptions): Promise<string[]> {
    // ListObjects (v1): its Marker is exactly V2's StartAfter, and s3rver (our test server)
    // answers 500 to any truncated V2 listing (its continuation token needs DES, which
    // Node 20's OpenSSL 3 lacks). AWS S3 and MinIO serve both versions.
    const page = await this.client.send(
      new ListObjectsCommand({
        Bucket: this.bucket,
        Prefix: this.prefix + prefix,
        MaxKeys: listLimit(options.limit),
        ...(options.startAfter !== undefined ? { Marker: this.prefix + options.startAfter } : {}),
      }),
    );
    return (page.Contents ?? []).flatMap((object) => (object.Key ? [object.Key.slice(this.prefix.length)] : []));
  }

  async startMultipart(key: string, contentType?: string): Promise<string> {
    const started = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: this.prefix + key, ...(contentType ? { ContentType: contentType } : {}) }));
    if (!started.UploadId) throw new BuilderError("STORAGE_UNAVAILABLE", `S3 started no multipart upload for ${this.location}${key}`);
    return started.UploadId;
  }

  async putPart(key: string, uploadId: string, partNumber: number, body: Buffer): Promise<string> {
    const part = await this.client.send(new UploadPartCommand({ Bucket: this.bucket, Key: this.prefix + key, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length }));
    return part.ETag ?? "";
  }

  async completeMultipart(key: string, uploadId: string, parts: readonly MultipartPart[]): Promise<void> {
    try {
      await this.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: this.prefix + key,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts.map((part) => ({ PartNumber: part.partNumber, ETag: part.etag })) },
        }),
      );
    } catch (error) {
      // a completion that already happened (a retry after a lost answer, another uploader's)
      // leaves no upload behind: AWS answers NoSuchUpload, s3rver an internal error
      if (await this.exists(key).catch(() => false)) return;
      throw error;
    }
  }
}

/** The same layout in a local folder; writes go to a temp name first so readers never see half a file. */
export class LocalArtifactStore implements ArtifactStore {
  readonly location: string;
  private readonly root: string;

  constructor(root: string) {
    this.root = path.resolve(root);
    this.location = `file://${this.root}/`;
  }

  private pathOf(key: string): string {
    const full = path.resolve(this.root, key);
    if (!full.startsWith(this.root + path.sep)) throw new BuilderError("INTERNAL", `artifact key "${key}" leaves the store`);
    return full;
  }

  async exists(key: string): Promise<boolean> {
    return stat(this.pathOf(key)).then(
      (stats) => stats.isFile(),
      () => false,
    );
  }

  async put(key: string, body: Readable | Buffer | string): Promise<void> {
    const target = this.pathOf(key);
    await mkdir(path.dirname(target), { recursive: true });
    const partial = `${target}.${process.pid}.${Date.now()}.partial`;
    try {
      await pipeline(body instanceof Readable ? body : Readable.from([typeof body === "string" ? Buffer.from(body) : body]), createWriteStream(partial));
      await rename(partial, target);
    } catch (error) {
      await rm(partial, { force: true });
      throw error;
    }
  }

  async get(key: string): Promise<Readable | undefined> {
    const target = this.pathOf(key);
    if (!(await this.exists(key))) return undefined;
    return createReadStream(target);
  }

  async listKeys(prefix: string, options: ListKeysOptions): Promise<string[]> {
    const limit = listLimit(options.limit);
    const { startAfter } = options;
    const found: string[] = [];
    // S3 semantics over folders: keys are paths, listed in byte order; folders that hold only
    // keys before startAfter (or outside the prefix) are skipped unread, so a page reads the
    // folders it lists from, not the whole store
    const walk = async (folder: string): Promise<void> => {
      const entries = await readdir(folder ? this.pathOf(folder) : this.root, { withFileTypes: true }).catch(() => []);
      // a folder sorts as its keys do: "a/…" after "a-b", so compare "a/" with "a-b"
      const named = entries.map((entry) => ({ entry, key: folder + entry.name + (entry.isDirectory() ? "/" : "") })).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      for (const { entry, key } of named) {
        if (found.length >= limit) return;
        if (entry.isDirectory()) {
          const overlapsPrefix = key.startsWith(prefix) || prefix.startsWith(key);
          const allBefore = startAfter !== undefined && key < startAfter && !startAfter.startsWith(key);
          if (overlapsPrefix && !allBefore) await walk(key);
        } else if (entry.isFile() && key.startsWith(prefix) && !entry.name.endsWith(".partial") && (startAfter === undefined || key > startAfter)) {
          found.push(key);
        }
      }
    };
    await walk(prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/") + 1) : "");
    return found;
  }

  private uploadDir(uploadId: string): string {
    if (!/^[0-9a-f-]{36}$/.test(uploadId)) throw new BuilderError("INTERNAL", `bad multipart upload id "${uploadId}"`);
    // a dot folder: listKeys never walks into it (keys never start with a dot)
    return path.join(this.root, ".multipart", uploadId);
  }

  async startMultipart(_key: string): Promise<string> {
    const uploadId = randomUUID();
    await mkdir(this.uploadDir(uploadId), { recursive: true });
    return uploadId;
  }

  async putPart(_key: string, uploadId: string, partNumber: number, body: Buffer): Promise<string> {
    const dir = this.uploadDir(uploadId);
    await mkdir(dir, { recursive: true });
    const partial = path.join(dir, `${partNumber}.partial`);
    await pipeline(Readable.from([body]), createWriteStream(partial));
    await rename(partial, path.join(dir, String(partNumber)));
    return createHash("md5").update(body).digest("hex");
  }

  async completeMultipart(key: string, uploadId: string, parts: readonly MultipartPart[]): Promise<void> {
    const dir = this.uploadDir(uploadId);
    if (!(await stat(dir).catch(() => undefined)) && (await this.exists(key))) return;
    const files = parts.map((part) => path.join(dir, String(part.partNumber)));
    await this.put(key, Readable.from((async function* () {
      for (const file of files) yield* createReadStream(file);
    })()));
    await rm(dir, { recursive: true, force: true });
  }
}

export interface ArtifactStoreSettings {
  /** the bucket; absent → the local folder */
  bucket?: string;
  /** key prefix inside the bucket, e.g. `m1l0/` */
  prefix?: string;
  s3: S3Settings;
  localDir: string;
}

/** S3 when a bucket is configured, otherwise the local folder (same layout either way). */
export function createArtifactStore(settings: ArtifactStoreSettings): ArtifactStore {
  if (!settings.bucket) return new LocalArtifactStore(settings.localDir);
  return new S3ArtifactStore(createS3Client(settings.s3), settings.bucket, settings.prefix ?? "");
}

/** The artifact-store settings API and worker read from their environment. */
export interface ArtifactStoreEnv {
  S3_BUCKET?: string | undefined;
  S3_ENDPOINT?: string | undefined;
  S3_REGION: string;
  S3_FORCE_PATH_STYLE: boolean;
  ARTIFACTS_DIR: string;
}

/** The one way a process opens its artifact store: S3 when S3_BUCKET is set, else ARTIFACTS_DIR. */
export function artifactStoreFromEnv(env: ArtifactStoreEnv): ArtifactStore {
  return createArtifactStore({
    ...(env.S3_BUCKET ? { bucket: env.S3_BUCKET } : {}),
    s3: { region: env.S3_REGION, ...(env.S3_ENDPOINT ? { endpoint: env.S3_ENDPOINT } : {}), forcePathStyle: env.S3_FORCE_PATH_STYLE },
    localDir: env.ARTIFACTS_DIR,
  });
}
