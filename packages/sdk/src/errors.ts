import type { FieldIssue } from "@m1l0/config";

/** Code used when the API could not be reached at all (no HTTP response). */
export const API_UNREACHABLE = "API_UNREACHABLE";

/**
 * An error answered by the M1L0 API (or the absence of an answer: status 0).
 * `code` is the server's stable error code (e.g. VALIDATION_FAILED, NOT_FOUND);
 * `issues` names every offending field of a rejected config.
 */
export class M1l0ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly issues: FieldIssue[];
  /** 429 RATE_LIMITED (and 503s that say so): seconds to wait before retrying, from Retry-After */
  readonly retryAfterSeconds: number | undefined;

  constructor(status: number, code: string, message: string, options: { issues?: FieldIssue[]; cause?: unknown; retryAfterSeconds?: number } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "M1l0ApiError";
    this.status = status;
    this.code = code;
    this.issues = options.issues ?? [];
    this.retryAfterSeconds = options.retryAfterSeconds;
  }

  /** 401: no token, a malformed one, or one the API does not know. */
  get isUnauthenticated(): boolean {
    return this.status === 401;
  }

  /** 429: this token's build-submission budget is spent for now (see retryAfterSeconds). */
  get isRateLimited(): boolean {
    return this.status === 429;
  }
}

/** wait() gave up before the build reached a final status; the build itself keeps running. */
export class M1l0TimeoutError extends Error {
  readonly buildId: string;

  constructor(buildId: string, timeoutMs: number) {
    super(`build ${buildId} did not finish within ${timeoutMs} ms (it keeps running on the server)`);
    this.name = "M1l0TimeoutError";
    this.buildId = buildId;
  }
}

interface ErrorBody {
  error?: { code?: unknown; message?: unknown; issues?: unknown };
}

function toIssues(value: unknown): FieldIssue[] {
  if (!Array.isArray(value)) return [];
  return value.flatMap((item: unknown) => {
    const candidate = item as Partial<FieldIssue> | null;
    return candidate && typeof candidate.field === "string" && typeof candidate.message === "string" ? [{ field: candidate.field, message: candidate.message }] : [];
  });
}

/** Turns a non-2xx response into an M1l0ApiError, tolerating bodies that are not our JSON. */
export async function errorFromResponse(response: Response): Promise<M1l0ApiError> {
  const text = await response.text().catch(() => "");
  let body: ErrorBody | undefined;
  try {
    body = JSON.parse(text) as ErrorBody;
  } catch {
    body = undefined;
  }
  const error = body?.error;
  const code = typeof error?.code === "string" ? error.code : response.status === 401 ? "UNAUTHENTICATED" : response.status === 429 ? "RATE_LIMITED" : `HTTP_${response.status}`;
  let message = typeof error?.message === "string" ? error.message : text.trim() || `${response.status} ${response.statusText}`;
  const retryAfter = Number(response.headers.get("retry-after") ?? "");
  const retryAfterSeconds = Number.isFinite(retryAfter) && retryAfter >= 0 && response.headers.has("retry-after") ? retryAfter : undefined;
  if (response.status === 401) message = `${message} (the API needs a valid token: pass \`token\` to M1l0Client, e.g. from M1L0_TOKEN)`;
  if (response.status === 429 && retryAfterSeconds !== undefined && !/retry/i.test(message)) message = `${message} (retry after ${retryAfterSeconds} s)`;
  return new M1l0ApiError(response.status, code, message, { issues: toIssues(error?.issues), ...(retryAfterSeconds !== undefined ? { retryAfterSeconds } : {}) });
}
