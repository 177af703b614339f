import { BuilderError, formatBytes } from "@m1l0/config";
import http from "node:http";
import https from "node:https";
import type { GitHttpRequest, GitHttpResponse, HttpClient } from "isomorphic-git";
import nodeHttp from "isomorphic-git/http/node";
import { describeSource } from "../describe.js";
import type { NetworkGuard } from "../network.js";
import { checkScheme, type Context } from "./session.js";

/** Idle-socket timeout for each request to the git server. */
const HTTP_TIMEOUT_MS = 120_000;
/** Redirects followed per request (GitHub answers renamed repositories with one). */
const MAX_REDIRECTS = 5;

/** Passes a response body through, failing once the clone as a whole received more than allowed. */
async function* countedBody(body: AsyncIterableIterator<Uint8Array>, onChunk: (bytes: number) => void): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const chunk of body) {
    onChunk(chunk.byteLength);
    yield chunk;
  }
}

/**
 * isomorphic-git's Node client with the source policy applied to every request: the scheme
 * and host of each URL (redirects are followed here, one checked hop at a time), the
 * addresses actually connected to (a checking `lookup`, so DNS rebinding cannot reach a
 * refused address), and the clone's byte cap and deadline (`signal`).
 */
export function guardedHttpClient(
  ctx: Context,
  guard: NetworkGuard,
  signal: AbortSignal,
  stop: (failure: BuilderError) => void,
  maxBytes: number,
): { client: HttpClient; close: () => void } {
  // Agents of this clone only: no pooled socket opened by anything else is ever reused.
  const agents = { "http:": new http.Agent({ keepAlive: true }), "https:": new https.Agent({ keepAlive: true }) };
  let received = 0;
  const count = (bytes: number) => {
    received += bytes;
    if (received > maxBytes) {
      const failure = new BuilderError(
        "SOURCE_FETCH_FAILED",
        `repository ${ctx.shown} is larger than ${formatBytes(maxBytes)} (the worker's CLONE_MAX_BYTES); use an s3 archive or a smaller repository`,
        { retryable: false },
      );
      stop(failure);
      throw failure;
    }
  };
  const request = async (first: GitHttpRequest): Promise<GitHttpResponse> => {
    let current = first;
    for (let hop = 0; ; hop++) {
      const target = new URL(current.url);
      try {
        checkScheme(target, ctx.policy);
        guard.checkUrlHost(target);
      } catch (error) {
        if (error instanceof BuilderError) stop(error);
        throw error;
      }
      let response: GitHttpResponse;
      try {
        response = await nodeHttp.request({
          ...current,
          agent: agents[target.protocol as "http:" | "https:"],
          signal,
          fetchOptions: { ...(current.fetchOptions as object | undefined), timeout: HTTP_TIMEOUT_MS, lookup: guard.lookup, followRedirects: false },
        });
      } catch (error) {
        if (error instanceof BuilderError) stop(error);
        throw error;
      }
      const location = response.headers?.location;
      const method = (current.method ?? "GET").toUpperCase();
      const redirected = response.statusCode >= 300 && response.statusCode < 400 && location !== undefined;
      // A GET is re-sent as is; a POST only on 307/308 (which keep the method) with a body held in memory.
      const replayable = method === "GET" || method === "HEAD" || ((response.statusCode === 307 || response.statusCode === 308) && Array.isArray(current.body));
      if (!redirected || !replayable) {
        return response.body ? { ...response, body: countedBody(response.body, count) } : response;
      }
      await response.body?.return?.();
      if (hop >= MAX_REDIRECTS) {
        const failure = new BuilderError("SOURCE_FETCH_FAILED", `git server ${ctx.host} redirected more than ${MAX_REDIRECTS} times for ${ctx.shown}`, { retryable: false });
        stop(failure);
        throw failure;
      }
      const next = new URL(location, target);
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(current.headers ?? {})) {
        // credentials belong to the origin they were given for
        if (name.toLowerCase() === "host") continue;
        if (next.origin !== target.origin && ["authorization", "cookie"].includes(name.toLowerCase())) continue;
        headers[name] = value;
      }
      ctx.log(`redirected to ${describeSource(next.href)}`);
      current = { ...current, url: next.href, headers };
    }
  };
  return {
    client: { request },
    close: () => {
      agents["http:"].destroy();
      agents["https:"].destroy();
    },
  };
}

