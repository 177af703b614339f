/** Stable error codes. Each maps to an HTTP status, a gRPC status and a retry decision. */
export const ERROR_CODES = {
  VALIDATION_FAILED: { http: 400, retryable: false },
  /** no, a malformed or an unknown API token */
  UNAUTHENTICATED: { http: 401, retryable: false },
  /** a valid token without the role the route needs (admin routes) */
  FORBIDDEN: { http: 403, retryable: false },
  /** the token's build-submission budget is spent for now (Retry-After says when it refills) */
  RATE_LIMITED: { http: 429, retryable: true },
  UNSUPPORTED_BASE: { http: 400, retryable: false },
  SOURCE_NOT_ALLOWED: { http: 400, retryable: false },
  NOT_FOUND: { http: 404, retryable: false },
  CONFLICT: { http: 409, retryable: false },
  SOURCE_NOT_FOUND: { http: 422, retryable: false },
  SOURCE_AUTH_FAILED: { http: 422, retryable: false },
  SOURCE_FETCH_FAILED: { http: 502, retryable: true },
  ARCHIVE_INVALID: { http: 422, retryable: false },
  ENTRY_NOT_FOUND: { http: 422, retryable: false },
  DOCKERFILE_NOT_FOUND: { http: 422, retryable: false },
  DOCKERFILE_ERROR: { http: 422, retryable: false },
  DEPENDENCY_INSTALL_FAILED: { http: 422, retryable: false },
  /** a dependency file of the source cannot be used as written (apt.txt: a line that is not a package name) */
  INVALID_DEPENDENCY_FILE: { http: 422, retryable: false },
  /** the source's layout cannot be built on its base (environment.yml without conda) */
  UNSUPPORTED_LAYOUT: { http: 422, retryable: false },
  /** the import check: the entry (or a project module it reaches) imports a module the built image lacks */
  MISSING_DEPENDENCY: { http: 422, retryable: false },
  BASE_IMAGE_UNAVAILABLE: { http: 422, retryable: false },
  BUILD_FAILED: { http: 422, retryable: false },
  /** a RUN step hit the per-build process limit (BUILD_PIDS_LIMIT) */
  PIDS_LIMIT_EXCEEDED: { http: 422, retryable: false },
  /** a Dockerfile's FROM names a registry outside ALLOWED_BASE_REGISTRIES */
  BASE_IMAGE_NOT_ALLOWED: { http: 422, retryable: false },
  /** a source is larger than the worker's caps (checked-out bytes or files) */
  SOURCE_TOO_LARGE: { http: 422, retryable: false },
  REGISTRY_AUTH_FAILED: { http: 422, retryable: false },
  REGISTRY_UNREACHABLE: { http: 502, retryable: true },
  PUSH_FAILED: { http: 502, retryable: true },
  DAEMON_UNREACHABLE: { http: 503, retryable: true },
  /** the build network or its egress rules (BUILD_EGRESS) could not be checked or installed: no build runs unfenced */
  EGRESS_POLICY_UNAVAILABLE: { http: 503, retryable: true },
  QUEUE_UNAVAILABLE: { http: 503, retryable: true },
  /** the log/artifact store (S3) did not answer in time or refused the call */
  STORAGE_UNAVAILABLE: { http: 503, retryable: true },
  BUILD_TIMEOUT: { http: 422, retryable: false },
  BUILD_CANCELLED: { http: 409, retryable: false },
  INTERNAL: { http: 500, retryable: true },
} as const satisfies Record<string, { http: number; retryable: boolean }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface FieldIssue {
  /** dotted path of the offending field, e.g. `tags.1.Key` */
  field: string;
  message: string;
}

/** The one error type the builder throws: a stable code, a user-actionable message. */
export class BuilderError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly issues: FieldIssue[] | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; issues?: FieldIssue[]; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "BuilderError";
    this.code = code;
    this.retryable = options.retryable ?? ERROR_CODES[code].retryable;
    this.issues = options.issues;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  toJSON(): { code: ErrorCode; message: string; issues?: FieldIssue[] } {
    return this.issues ? { code: this.code, message: this.message, issues: this.issues } : { code: this.code, message: this.message };
  }
}

export function isBuilderError(error: unknown): error is BuilderError {
  return error instanceof BuilderError;
}
