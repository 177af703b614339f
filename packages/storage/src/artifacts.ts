import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { HeadObjectCommand, ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
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

export interface StoredArtifact {
  key: string;
  lastModified: Date;
  size: number;
}

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
  /** Objects under `prefix`, newest first, at most `limit`. */
  list(prefix: string, limit: number): Promise<StoredArtifact[]>;
}

/** Most keys read from S3 when listing newest-first (S3 lists in key order only). */
const LIST_SCAN_LIMIT = 10_000;

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

  async list(prefix: string, limit: number): Promise<StoredArtifact[]> {
    const found: StoredArtifact[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, ...(token ? { ContinuationToken: token } : {}) }),
      );
      for (const object of page.Contents ?? []) {
        if (!object.Key) continue;
        found.push({ key: object.Key.slice(this.prefix.length), lastModified: object.LastModified ?? new Date(0), size: object.Size ?? 0 });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token && found.length < LIST_SCAN_LIMIT);
    return newestFirst(found, limit);
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

  async list(prefix: string, limit: number): Promise<StoredArtifact[]> {
    // keys are `<folder>/<name>`: list the folder and match the rest of the prefix on names
    const folder = prefix.includes("/") ? prefix.slice(0, prefix.lastIndexOf("/") + 1) : "";
    const namePrefix = prefix.slice(folder.length);
    const names = await readdir(folder ? this.pathOf(folder) : this.root).catch(() => [] as string[]);
    const found: StoredArtifact[] = [];
    for (const name of names) {
      if (!name.startsWith(namePrefix) || name.endsWith(".partial")) continue;
      const stats = await stat(path.join(this.root, folder, name)).catch(() => undefined);
      if (stats?.isFile()) found.push({ key: folder + name, lastModified: stats.mtime, size: stats.size });
    }
    return newestFirst(found, limit);
  }
}

function newestFirst(items: StoredArtifact[], limit: number): StoredArtifact[] {
  return items.sort((a, b) => b.lastModified.getTime() - a.lastModified.getTime() || (a.key < b.key ? 1 : -1)).slice(0, limit);
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
