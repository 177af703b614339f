import { S3Client } from "@aws-sdk/client-s3";

export interface S3Settings {
  /** e.g. http://127.0.0.1:4569 for an S3-compatible server; absent → AWS */
  endpoint?: string;
  region: string;
  /** bucket in the path (http://host/bucket/key) rather than the host name; needed by most S3-compatible servers */
  forcePathStyle?: boolean;
  /** absent → the AWS default credential chain (env, profile, instance role…) */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

export function createS3Client(settings: S3Settings): S3Client {
  return new S3Client({
    region: settings.region,
    ...(settings.endpoint === undefined ? {} : { endpoint: settings.endpoint }),
    forcePathStyle: settings.forcePathStyle ?? false,
    ...(settings.credentials === undefined ? {} : { credentials: settings.credentials }),
    // Custom endpoints are usually S3-compatible servers, some of which (older MinIO, Ceph, some
    // hosted offerings) reject the trailing-checksum uploads the SDK sends by default since 3.729.
    // Ask for checksums only where S3 requires them there.
    ...(settings.endpoint === undefined ? {} : { requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED" }),
  });
}
