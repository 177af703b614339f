import { S3Client } from "@aws-sdk/client-s3";
import { BuilderError, deadlineMiddleware } from "@m1l0/config";

export interface S3Settings {
  /** e.g. http://127.0.0.1:4569 for an S3-compatible server; absent → AWS */
  endpoint?: string;
  region: string;
  /** bucket in the path (http://host/bucket/key) rather than the host name; needed by most S3-compatible servers */
  forcePathStyle?: boolean;
  /** absent → the AWS default credential chain (env, profile, instance role…) */
  credentials?: { accessKeyId: string; secretAccessKey: string };
  /**
   * Deadlines, so a hung S3 never holds a build: `callTimeoutMs` for one `send` with its retries
   * (a GetObject's headers, one upload part) [60 000]; `socketTimeoutMs` for a connection with
   * nothing moving, also while a body streams [30 000]; `connectTimeoutMs` [5 000].
   */
  callTimeoutMs?: number;
  socketTimeoutMs?: number;
  connectTimeoutMs?: number;
}

interface S3Timeouts {
  callTimeoutMs: number;
  socketTimeoutMs: number;
  connectTimeoutMs: number;
}

export const S3_DEFAULT_TIMEOUTS: Readonly<S3Timeouts> = { callTimeoutMs: 60_000, socketTimeoutMs: 30_000, connectTimeoutMs: 5_000 };

export function createS3Client(settings: S3Settings): S3Client {
  const timeouts = { ...S3_DEFAULT_TIMEOUTS, ...definedOnly(settings) };
  const where = settings.endpoint ?? "AWS S3";
  const client = new S3Client({
    region: settings.region,
    ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint }),
    forcePathStyle: settings.forcePathStyle ?? false,
    ...(settings.credentials === undefined ? {} : { credentials: settings.credentials }),
    // socket-level timeouts: they close what a call abandoned at its deadline leaves open
    requestHandler: { connectionTimeout: timeouts.connectTimeoutMs, requestTimeout: timeouts.socketTimeoutMs, throwOnRequestTimeout: true },
    // Custom endpoints are usually S3-compatible servers, some of which (older MinIO, Ceph, some
    // hosted offerings) reject the trailing-checksum uploads the SDK sends by default since 3.729.
    // Ask for checksums only where S3 requires them there.
    ...(settings.endpoint === undefined ? {} : { requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED" }),
  });
  client.middlewareStack.add(
    deadlineMiddleware(timeouts.callTimeoutMs, (ms) => new BuilderError("STORAGE_UNAVAILABLE", `S3 (${where}) did not answer within ${ms / 1000} s`)),
    { step: "initialize", name: "m1l0CallDeadline" },
  );
  return client;
}

function definedOnly(settings: S3Settings): Partial<S3Timeouts> {
  const out: Partial<S3Timeouts> = {};
  if (settings.callTimeoutMs !== undefined) out.callTimeoutMs = settings.callTimeoutMs;
  if (settings.socketTimeoutMs !== undefined) out.socketTimeoutMs = settings.socketTimeoutMs;
  if (settings.connectTimeoutMs !== undefined) out.connectTimeoutMs = settings.connectTimeoutMs;
  return out;
}
