export type { S3Client } from "@aws-sdk/client-s3";
export { createS3Client, type S3Settings } from "./client.js";
export { deleteObject, getObjectStream, putObject, type ObjectStream } from "./objects.js";
