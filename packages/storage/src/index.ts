export type { S3Client } from "@aws-sdk/client-s3";
export { createS3Client, type S3Settings } from "./client.js";
export { deleteObject, getObjectStream, headObjectVersion, putObject, type ObjectStream } from "./objects.js";
export {
  LocalArtifactStore,
  S3ArtifactStore,
  artifactKeys,
  artifactStoreFromEnv,
  createArtifactStore,
  type ArtifactStoreEnv,
  type ArtifactStore,
  type ArtifactStoreSettings,
  LIST_KEYS_MAX,
  type ListKeysOptions,
  MULTIPART_MIN_PART_BYTES,
  type MultipartPart,
} from "./artifacts.js";
export {
  RECORD_INDEX_ROOT,
  archiveRecord,
  parseRecordIndexKey,
  recordIndexKey,
  recordIndexKeys,
  recordIndexPrefix,
  reindexArchivedRecords,
  type RecordIndexFilter,
  type ReindexProgress,
} from "./record-index.js";
