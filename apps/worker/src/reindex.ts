#!/usr/bin/env node
/**
 * One-off migration: `node apps/worker/dist/reindex.js` with the worker's S3_* (or
 * ARTIFACTS_DIR) settings. Archives written before the newest-first record index existed
 * have records/<id>.json only, which GET /builds cannot page through; this writes their index
 * keys. Idempotent, safe while workers and APIs run; new builds are indexed as they finish.
 */
import { reindexArchivedRecords } from "@m1l0/storage";
import { loadWorkerEnv } from "./env.js";
import { createLogger } from "./logger.js";
import { artifactStoreFromEnv } from "@m1l0/storage";

const env = loadWorkerEnv();
const logger = createLogger(env.LOG_LEVEL, "m1l0-reindex");
const artifacts = artifactStoreFromEnv(env);
logger.info({ store: artifacts.location }, "indexing archived records");
const done = await reindexArchivedRecords(artifacts, { onProgress: (progress) => logger.info(progress, "indexed so far") });
logger.info({ ...done, store: artifacts.location }, "archived records indexed");
