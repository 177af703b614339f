export type { S3Client } from "@aws-sdk/client-s3";
export { createS3Client, type S3Settings } from "./client.js";
export { deleteObject, getObjectStream, headObjectVersion, putObject, type ObjectStream } from "./objects.js";
export {
  LocalArtifactStore,
  S3ArtifactStore,
  artifactKeys,
  createArtifactStore,
  type ArtifactStore,
  type ArtifactStoreSettings,
  type StoredArtifact,
} from "./artifacts.js";
