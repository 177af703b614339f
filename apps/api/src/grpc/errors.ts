import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { BUILD_ID_PATTERN, BuilderError, isBuilderError, type BuildRecord, type ErrorCode } from "@m1l0/config";

/** Trailer carrying our stable error code, so clients can branch without parsing messages. */
export const ERROR_CODE_TRAILER = "m1l0-error-code";

/**
 * BuilderError code → gRPC status, the one place this mapping lives. Codes not listed are
 * server-side faults: they become INTERNAL with a generic message (details go to the log).
 */
const GRPC_STATUS_BY_ERROR_CODE: Partial<Record<ErrorCode, status>> = {
  VALIDATION_FAILED: status.INVALID_ARGUMENT,
  UNSUPPORTED_BASE: status.INVALID_ARGUMENT,
  SOURCE_NOT_ALLOWED: status.INVALID_ARGUMENT,
  NOT_FOUND: status.NOT_FOUND,
  UNAUTHENTICATED: status.UNAUTHENTICATED,
  FORBIDDEN: status.PERMISSION_DENIED,
  CONFLICT: status.ALREADY_EXISTS,
  RATE_LIMITED: status.RESOURCE_EXHAUSTED,
  QUEUE_UNAVAILABLE: status.UNAVAILABLE,
  STORAGE_UNAVAILABLE: status.UNAVAILABLE,
};

export interface ErrorLogger {
  error(object: object, message: string): void;
}

function serviceError(code: status, message: string, errorCode: ErrorCode | undefined): ServiceError {
  const metadata = new Metadata();
  if (errorCode) metadata.set(ERROR_CODE_TRAILER, errorCode);
  return Object.assign(new Error(message), { code, details: message, metadata });
}

/** The token's submission budget is spent: RESOURCE_EXHAUSTED with a `retry-after` (seconds) trailer. */
export function rateLimitedError(message: string, retryAfterSeconds: number): ServiceError {
  const error = serviceError(status.RESOURCE_EXHAUSTED, message, "RATE_LIMITED");
  error.metadata.set("retry-after", String(retryAfterSeconds));
  return error;
}

/** Any error thrown while serving a call → the ServiceError sent to the client. */
export function toServiceError(error: unknown, logger: ErrorLogger): ServiceError {
  if (isBuilderError(error)) {
    const code = GRPC_STATUS_BY_ERROR_CODE[error.code];
    if (code !== undefined) return serviceError(code, error.message, error.code);
    logger.error({ err: error, cause: error.cause }, error.message);
    return serviceError(status.INTERNAL, "internal error", error.code);
  }
  logger.error({ err: error }, "unhandled gRPC error");
  return serviceError(status.INTERNAL, "internal error", "INTERNAL");
}

/**
 * A build that ended without an image: FAILED_PRECONDITION for a failed build (retrying the
 * same request cannot help), ABORTED for a cancelled one; the message is the build's reason.
 */
export function buildEndedError(record: BuildRecord): ServiceError {
  if (record.status === "cancelled") {
    return serviceError(status.ABORTED, record.error?.message ?? `build ${record.id} was cancelled`, record.error?.code);
  }
  return serviceError(status.FAILED_PRECONDITION, record.error?.message ?? `build ${record.id} failed`, record.error?.code ?? "INTERNAL");
}

/** Find on a build that has no pushed image yet. */
export function buildNotFinishedError(record: BuildRecord): ServiceError {
  return serviceError(status.FAILED_PRECONDITION, `build ${record.id} is ${record.status}; its image is known once it has succeeded`, "CONFLICT");
}

/** Client-chosen ids end up in Redis keys, S3 keys and URLs, so they are checked like any other field. */
export function requireBuildId(id: string | undefined): string {
  if (!id) {
    throw new BuilderError("VALIDATION_FAILED", "id: is required (the client chooses the build id)", { issues: [{ field: "id", message: "is required" }] });
  }
  if (!BUILD_ID_PATTERN.test(id)) {
    const message = "must be 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit";
    throw new BuilderError("VALIDATION_FAILED", `id: ${message}`, { issues: [{ field: "id", message }] });
  }
  return id;
}
