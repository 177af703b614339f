import { Readable } from "node:stream";
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { BuilderError } from "@m1l0/config";

export interface ObjectStream {
  body: Readable;
  /** Content-Length reported by the server, when it sent one */
  size?: number;
}

const NOT_FOUND_NAMES = new Set(["NoSuchKey", "NoSuchBucket", "NotFound"]);
const AUTH_NAMES = new Set([
  "AccessDenied",
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "ExpiredToken",
  "InvalidToken",
  "TokenRefreshRequired",
  "CredentialsProviderError",
  "AllAccessDisabled",
]);

function isAbort(error: unknown, signal?: AbortSignal): boolean {
  if (signal?.aborted) return true;
  return error instanceof Error && error.name === "AbortError";
}

/** Maps an S3 SDK error for reading s3://bucket/key to a BuilderError (abort errors pass through untouched). */
function toReadError(error: unknown, bucket: string, key: string, signal?: AbortSignal): unknown {
  if (isAbort(error, signal) || error instanceof BuilderError) return error;
  const err = error as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const name = err?.name ?? "";
  const status = err?.$metadata?.httpStatusCode;
  const where = `s3://${bucket}/${key}`;
  if (name === "NoSuchBucket") {
    return new BuilderError("SOURCE_NOT_FOUND", `${where} not found: bucket ${bucket} does not exist`, { cause: error });
  }
  if (NOT_FOUND_NAMES.has(name) || status === 404) {
    return new BuilderError("SOURCE_NOT_FOUND", `${where} not found`, { cause: error });
  }
  if (AUTH_NAMES.has(name) || status === 401 || status === 403) {
    return new BuilderError("SOURCE_AUTH_FAILED", `access to ${where} denied (${name || status}): check the worker's S3 credentials and bucket policy`, {
      cause: error,
    });
  }
  const detail = name && name !== "Error" ? `${name}: ${err?.message ?? ""}` : (err?.message ?? String(error));
  return new BuilderError("SOURCE_FETCH_FAILED", `could not read ${where}: ${detail}`, { cause: error, retryable: true });
}

/**
 * Streams an object. NoSuchKey/NoSuchBucket → SOURCE_NOT_FOUND, AccessDenied → SOURCE_AUTH_FAILED,
 * network errors and 5xx → SOURCE_FETCH_FAILED (retryable). An aborted signal rejects with the abort error.
 * The caller must consume or destroy `body`.
 */
export async function getObjectStream(client: S3Client, bucket: string, key: string, signal?: AbortSignal): Promise<ObjectStream> {
  let response;
  try {
    response = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), signal ? { abortSignal: signal } : {});
  } catch (error) {
    throw toReadError(error, bucket, key, signal);
  }
  const body = response.Body;
  if (!(body instanceof Readable)) {
    // Node's SDK always returns an IncomingMessage; anything else means a non-Node runtime.
    throw new BuilderError("SOURCE_FETCH_FAILED", `could not read s3://${bucket}/${key}: the S3 client returned no readable stream`, {
      retryable: false,
    });
  }
  return response.ContentLength === undefined ? { body } : { body, size: response.ContentLength };
}

/** What identifies one version of an object's content: its ETag (and version id where versioning is on). */
export async function headObjectVersion(
  client: S3Client,
  bucket: string,
  key: string,
  signal?: AbortSignal,
): Promise<{ etag: string; versionId?: string; size?: number }> {
  let response;
  try {
    response = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }), signal ? { abortSignal: signal } : {});
  } catch (error) {
    throw toReadError(error, bucket, key, signal);
  }
  return {
    etag: (response.ETag ?? "").replace(/"/g, ""),
    ...(response.VersionId ? { versionId: response.VersionId } : {}),
    ...(response.ContentLength !== undefined ? { size: response.ContentLength } : {}),
  };
}

/**
 * Stores an object. Streams go through a multipart upload (no need to know their length);
 * buffers and strings through a single PUT.
 */
export async function putObject(
  client: S3Client,
  bucket: string,
  key: string,
  body: Readable | Buffer | string,
  contentType?: string,
): Promise<void> {
  const params = { Bucket: bucket, Key: key, Body: body, ...(contentType === undefined ? {} : { ContentType: contentType }) };
  if (body instanceof Readable) {
    await new Upload({ client, params, queueSize: 4, partSize: 8 * 1024 * 1024, leavePartsOnError: false }).done();
    return;
  }
  await client.send(new PutObjectCommand(params));
}

/** Deletes an object; deleting a missing key is not an error (S3 semantics). */
export async function deleteObject(client: S3Client, bucket: string, key: string): Promise<void> {
  await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
}
