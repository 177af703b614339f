import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The .proto files ship inside this package (packages/proto/proto). Resolved from this
 * module's own URL, which sits one level below the package root both as src/ (vitest) and
 * as dist/ (built), so the same path works from either.
 */
export const PROTO_ROOT = fileURLToPath(new URL("../proto/", import.meta.url));

/** Paths relative to PROTO_ROOT: they become the file names reflection reports. */
export const IMAGE_BUILDER_PROTO_FILE = "m1l0_services/imagebuilder/v1/imagebuilder.proto";
export const HEALTH_PROTO_FILE = "grpc/health/v1/health.proto";

export const IMAGE_BUILDER_PROTO_PATH = path.join(PROTO_ROOT, IMAGE_BUILDER_PROTO_FILE);
export const HEALTH_PROTO_PATH = path.join(PROTO_ROOT, HEALTH_PROTO_FILE);
