import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, UntypedServiceImplementation } from "@grpc/grpc-js";
import { BuilderError, isTerminal, type BuildRecord } from "@m1l0/config";
import {
  buildRequestToConfigInput,
  type BuildRequestMessage,
  type BuildResponseMessage,
  type FindRequestMessage,
  type FindResponseMessage,
  type PushRequestMessage,
  type PushResponseMessage,
} from "@m1l0/proto";
import { once } from "node:events";
import type { BuildHistory } from "../admin/history.js";
import { principalOf } from "../auth/grpc.js";
import { canAccess, submitterOf, type Principal } from "../auth/principal.js";
import type { SubmissionRateLimiter } from "../auth/rate-limit.js";
import type { BuildService } from "../builds.js";
import { buildEndedError, buildNotFinishedError, rateLimitedError, requireBuildId, toServiceError, type ErrorLogger } from "./errors.js";

export interface GrpcLogger extends ErrorLogger {
  info(object: object, message: string): void;
}

export interface ImageBuilderDeps {
  builds: BuildService;
  /** records and events through Redis, then the archive: the same reads as REST */
  history: BuildHistory;
  logger: GrpcLogger;
  /** per-token Build budget, shared with REST POST /builds */
  rateLimiter?: SubmissionRateLimiter;
}

/** The record if this caller may see it; another token's build is NOT_FOUND, exactly like a missing one. */
async function visibleRecord(history: BuildHistory, principal: Principal, id: string): Promise<BuildRecord> {
  const record = await history.get(id);
  if (!record || !canAccess(principal, record)) throw new BuilderError("NOT_FOUND", `build ${id} not found`);
  return record;
}

type StreamingCall<Request, Response> = ServerWritableStream<Request, Response>;

/** Aborts when the client goes away, which ends BuildStore.follow. */
function abortOnCancel(call: { on(event: "cancelled", listener: () => void): unknown }): AbortSignal {
  const controller = new AbortController();
  call.on("cancelled", () => controller.abort());
  return controller.signal;
}

/** Writes one message, waiting for the client to drain if it reads slower than the build logs. */
async function send<Response>(call: StreamingCall<unknown, Response>, message: Response, signal: AbortSignal): Promise<void> {
  if (call.write(message)) return;
  try {
    await once(call, "drain", { signal });
  } catch {
    // aborted: the caller's loop sees the signal and stops
  }
}

const succeeded = (record: BuildRecord) => record.status === "succeeded" || record.status === "cached";

/**
 * ImageBuilderService over the same BuildService and BuildStore as REST, so a gRPC build is
 * an ordinary build record and any replica can stream any build.
 */
export function imageBuilderHandlers(deps: ImageBuilderDeps): UntypedServiceImplementation {
  const { builds, history, logger, rateLimiter } = deps;

  const fail = (call: StreamingCall<unknown, unknown>, signal: AbortSignal, error: unknown) => {
    if (!signal.aborted) call.emit("error", toServiceError(error, logger));
  };

  return {
    /** Submits under the client's id (or attaches to that build) and streams fetch + build logs. */
    Build: async (call: StreamingCall<BuildRequestMessage, BuildResponseMessage>) => {
      const signal = abortOnCancel(call);
      try {
        const id = requireBuildId(call.request.id);
        const principal = principalOf(call);
        if (rateLimiter?.enabled && !principal.anonymous) {
          const limit = await rateLimiter.hit(principal.name);
          if (!limit.allowed) {
            call.emit("error", rateLimitedError(`build submission limit reached for this token (${rateLimiter.settings.max} per ${rateLimiter.settings.windowMs / 1000} s); retry in ${limit.retryAfterSeconds} s`, limit.retryAfterSeconds));
            return;
          }
        }
        const submitter = submitterOf(principal);
        const { record: submitted, created } = await builds.submit(buildRequestToConfigInput(call.request), { id, ...(submitter !== undefined ? { submitter } : {}) });
        // client-chosen ids share one namespace: another token's build is not attached to (nor shown)
        if (!created && !canAccess(principal, submitted)) throw new BuilderError("CONFLICT", `id: build id ${id} is already taken; choose another id`);
        logger.info({ buildId: id, created }, created ? "gRPC Build enqueued a build" : "gRPC Build attached to an existing build");
        for await (const { event } of history.events(id, "0", signal)) {
          if (event.type === "log") {
            if (event.phase !== "push") await send(call, { body: event.line }, signal);
            continue;
          }
          if (event.status !== "pushing" && !isTerminal(event.status)) continue;
          const record = await history.require(id);
          // the worker records the target when pushing starts; the build phase is over then
          if (record.image && (event.status === "pushing" || succeeded(record))) {
            await send(call, { body: `imagename: ${record.image.reference}` }, signal);
            call.end();
            return;
          }
          if (isTerminal(event.status)) break;
        }
        if (signal.aborted) return;
        const record = await history.require(id);
        if (succeeded(record) && record.image) {
          await send(call, { body: `imagename: ${record.image.reference}` }, signal);
          call.end();
          return;
        }
        call.emit("error", buildEndedError(record));
      } catch (error) {
        fail(call, signal, error);
      }
    },

    /** Our workers push as part of the build job, so Push follows that build's push phase. */
    Push: async (call: StreamingCall<PushRequestMessage, PushResponseMessage>) => {
      const signal = abortOnCancel(call);
      try {
        const id = requireBuildId(call.request.id);
        await visibleRecord(history, principalOf(call), id);
        for await (const { event } of history.events(id, "0", signal)) {
          if (event.type === "log" && event.phase === "push") await send(call, { body: event.line }, signal);
        }
        if (signal.aborted) return;
        const record = await history.require(id);
        if (succeeded(record) && record.image) {
          await send(call, { body: `repository: ${record.image.reference}` }, signal);
          call.end();
          return;
        }
        call.emit("error", buildEndedError(record));
      } catch (error) {
        fail(call, signal, error);
      }
    },

    /** The pushed image of a finished build: `image` pinned by digest, `repository` the tagged reference. */
    Find: async (call: ServerUnaryCall<FindRequestMessage, FindResponseMessage>, callback: sendUnaryData<FindResponseMessage>) => {
      try {
        const id = requireBuildId(call.request.id);
        const record = await visibleRecord(history, principalOf(call), id);
        if (!succeeded(record) || !record.image?.digest) {
          callback(isTerminal(record.status) && !succeeded(record) ? buildEndedError(record) : buildNotFinishedError(record));
          return;
        }
        const { registry, repository, digest, reference } = record.image;
        callback(null, { id, image: `${registry}/${repository}@${digest}`, repository: reference });
      } catch (error) {
        callback(toServiceError(error, logger));
      }
    },
  };
}
