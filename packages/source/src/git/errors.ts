import { BuilderError } from "@m1l0/config";
import { Errors } from "isomorphic-git";
import type { Context } from "./session.js";

/** What git over HTTP can fail with, in the worker's error codes (tokens never in a message). */
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EHOSTDOWN",
  "ENETDOWN",
  "EAI_AGAIN",
  "ENOTFOUND",
  "EPIPE",
  "ECONNABORTED",
]);

export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

function isNetworkError(error: unknown): boolean {
  const code = errorCode(error);
  if (code && (NETWORK_CODES.has(code) || code.startsWith("UND_ERR"))) return true;
  const message = error instanceof Error ? error.message : "";
  return /Request timed out|socket hang up|^aborted$/i.test(message);
}

function authError(ctx: Context, cause: unknown): BuilderError {
  const message = ctx.authSent
    ? `authentication failed for ${ctx.host}: the worker's token for this host was rejected (check it is valid and can read the repository)`
    : `authentication failed for ${ctx.host}: set a token for this host on the worker`;
  return new BuilderError("SOURCE_AUTH_FAILED", message, { cause: scrubbed(ctx, cause) });
}

/** The original error with any token removed from its message, kept as `cause` for debugging. */
function scrubbed(ctx: Context, error: unknown): unknown {
  if (!(error instanceof Error)) return error;
  const clean = new Error(ctx.redact(error.message));
  clean.name = error.name;
  const code = errorCode(error);
  if (code) (clean as NodeJS.ErrnoException).code = code;
  return clean;
}

export function toBuilderError(ctx: Context, error: unknown): unknown {
  const signal = ctx.signal;
  if (signal?.aborted) return signal.reason ?? error;
  if (ctx.failure) return ctx.failure;
  if (error instanceof BuilderError) return error;
  const code = errorCode(error);
  const message = ctx.redact(error instanceof Error ? error.message : String(error));

  if (code === Errors.UserCanceledError.code) return authError(ctx, error);
  if (code === Errors.HttpError.code) {
    const status = (error as { data?: { statusCode?: number } }).data?.statusCode ?? 0;
    if (status === 401 || status === 403) return authError(ctx, error);
    if (status === 404 || status === 410) {
      const hint = ctx.credential ? "" : ` (if it is private, set a token for ${ctx.host} on the worker)`;
      return new BuilderError("SOURCE_NOT_FOUND", `repository ${ctx.shown} not found${hint}`, { cause: scrubbed(ctx, error) });
    }
    const retryable = status === 408 || status === 429 || status >= 500;
    return new BuilderError("SOURCE_FETCH_FAILED", `git server ${ctx.host} answered HTTP ${status} for ${ctx.shown}`, {
      cause: scrubbed(ctx, error),
      retryable,
    });
  }
  if (code === Errors.NotFoundError.code && ctx.ref !== undefined) {
    const what = String((error as { data?: { what?: unknown } }).data?.what ?? "");
    if (what === ctx.ref || what.endsWith(`/${ctx.ref}`)) {
      return new BuilderError("SOURCE_NOT_FOUND", `ref '${ctx.ref}' not found in ${ctx.shown}: no branch or tag of that name`, {
        cause: scrubbed(ctx, error),
      });
    }
  }
  if (code === Errors.SmartHttpError.code) {
    return new BuilderError("SOURCE_NOT_FOUND", `${ctx.shown} is not a git repository (the server did not answer with the git smart HTTP protocol)`, {
      cause: scrubbed(ctx, error),
    });
  }
  if (isNetworkError(error)) {
    return new BuilderError("SOURCE_FETCH_FAILED", `could not reach git server ${ctx.host}: ${message}`, { cause: scrubbed(ctx, error), retryable: true });
  }
  if (/certificate|self[- ]signed|CERT_|SSL|TLS/i.test(`${code ?? ""} ${message}`)) {
    return new BuilderError("SOURCE_FETCH_FAILED", `TLS error talking to ${ctx.host}: ${message}`, { cause: scrubbed(ctx, error), retryable: false });
  }
  return new BuilderError("SOURCE_FETCH_FAILED", `git fetch of ${ctx.shown} failed: ${message}`, { cause: scrubbed(ctx, error), retryable: true });
}

/** Errors after which a different fetch strategy cannot help. */
export function isFinal(ctx: Context, error: unknown): boolean {
  if (ctx.signal?.aborted || ctx.failure) return true;
  const code = errorCode(error);
  return code === Errors.UserCanceledError.code || code === Errors.HttpError.code || code === Errors.SmartHttpError.code || isNetworkError(error);
}

