import { createHash } from "node:crypto";
import { AbortScope } from "@m1l0/config";
import type { RegistryAuth } from "./types.js";

const MANIFEST_TYPES = [
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.index.v1+json",
];
const INDEX_TYPES = new Set(["application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.oci.image.index.v1+json"]);
/** Manifests and image configs are small; anything bigger is not what we pushed. */
const MAX_DOCUMENT_BYTES = 4 * 1024 ** 2;

export interface ImageLookupTarget {
  /** registry host as in references (docker.io means Docker Hub's registry-1.docker.io) */
  registry: string;
  repository: string;
  tag: string;
}

export interface ImageLookupOptions {
  auth?: RegistryAuth;
  /**
   * Talk plain HTTP to this host. Defaults to Docker's own rule: loopback registries
   * (localhost, 127.0.0.0/8, ::1) are plain HTTP, everything else HTTPS.
   */
  plainHttp?: boolean;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface RemoteImage {
  /** digest of the manifest the tag points at (what a push reports) */
  digest: string;
  labels: Record<string, string>;
}

/**
 * What this process learnt about registries, to save round trips on the next lookup: which
 * hosts take Basic credentials up front (instead of a 401 first), Bearer tokens until they
 * expire, and image configs by digest (content-addressed, so never stale).
 */
const basicHosts = new Set<string>();
const bearerTokens = new Map<string, { value: string; expiresAt: number }>();
const configLabels = new Map<string, Record<string, string>>();
const CONFIG_CACHE_ENTRIES = 1_000;

/** Why the registry could not answer; callers treat it as "not known", never as "absent". */
export class ImageLookupError extends Error {
  override readonly name = "ImageLookupError";
}

function apiHost(registry: string): string {
  return registry === "docker.io" || registry === "index.docker.io" ? "registry-1.docker.io" : registry;
}

function repositoryPath(registry: string, repository: string): string {
  // Docker Hub's official images live under library/
  return apiHost(registry) === "registry-1.docker.io" && !repository.includes("/") ? `library/${repository}` : repository;
}

export function isLoopbackRegistry(host: string): boolean {
  const hostname = host.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return hostname === "localhost" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Parses `Bearer realm="…",service="…",scope="…"` (or Basic) from WWW-Authenticate. */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const space = header.indexOf(" ");
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  for (const match of header.slice(space + 1).matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) {
    if (match[1] && match[2] !== undefined) params[match[1].toLowerCase()] = match[2];
  }
  return { scheme, params };
}

/**
 * Reads what a registry tag holds — the manifest digest and the image config's labels — over
 * the registry HTTP API (two or three small GETs, no pull). Undefined when the tag does not
 * exist. Authenticates the way `docker` does: Basic, or a Bearer token from the challenge's
 * realm using the worker's credentials. Throws ImageLookupError when the registry cannot say.
 */
export async function lookupRemoteImage(target: ImageLookupTarget, options: ImageLookupOptions = {}): Promise<RemoteImage | undefined> {
  const timeoutMs = options.timeoutMs ?? 5_000;
  const deadline = new AbortScope({
    timeoutMs,
    signal: options.signal,
    onTimeout: () => new ImageLookupError(`registry ${target.registry} did not answer within ${timeoutMs / 1000} s`),
  });
  try {
    return await deadline.race(readRemoteImage(target, options, deadline.signal));
  } finally {
    deadline.dispose();
  }
}

async function readRemoteImage(target: ImageLookupTarget, options: ImageLookupOptions, signal: AbortSignal): Promise<RemoteImage | undefined> {
  const host = apiHost(target.registry);
  const scheme = options.plainHttp ?? isLoopbackRegistry(host) ? "http" : "https";
  const base = `${scheme}://${host}/v2/${repositoryPath(target.registry, target.repository)}`;
  const scope = `repository:${repositoryPath(target.registry, target.repository)}:pull`;
  const tokenKey = `${host} ${scope} ${options.auth?.username ?? ""}`;
  let authorization: string | undefined;
  if (options.auth && basicHosts.has(host)) authorization = basicAuthorization(options.auth);
  const cachedToken = bearerTokens.get(tokenKey);
  if (options.auth && cachedToken && cachedToken.expiresAt > Date.now()) authorization = cachedToken.value;

  const get = async (url: string, accept: string[]): Promise<Response> => {
    const send = () =>
      fetch(url, {
        headers: { accept: accept.join(", "), ...(authorization ? { authorization } : {}) },
        signal,
        redirect: "follow",
      });
    let response: Response;
    try {
      response = await send();
      if (response.status === 401 && options.auth) {
        await response.body?.cancel();
        const challenge = parseChallenge(response.headers.get("www-authenticate") ?? "");
        authorization = await authorize(challenge, scope, options.auth, signal, target.registry);
        if (challenge.scheme === "basic") basicHosts.add(host);
        response = await send();
        if (authorization?.startsWith("Bearer ") && response.ok) bearerTokens.set(tokenKey, { value: authorization, expiresAt: Date.now() + 50_000 });
      }
    } catch (error) {
      if (error instanceof ImageLookupError) throw error;
      if (signal.aborted && signal.reason instanceof ImageLookupError) throw signal.reason;
      throw new ImageLookupError(`registry ${target.registry} could not be reached: ${(error as Error).message}`, { cause: error });
    }
    return response;
  };
  const readJson = async (response: Response, what: string): Promise<{ body: Buffer; json: Record<string, unknown> }> => {
    const length = Number(response.headers.get("content-length") ?? "0");
    if (length > MAX_DOCUMENT_BYTES) throw new ImageLookupError(`registry ${target.registry} sent a ${what} of ${length} bytes`);
    const body = Buffer.from(await response.arrayBuffer());
    if (body.length > MAX_DOCUMENT_BYTES) throw new ImageLookupError(`registry ${target.registry} sent a ${what} of ${body.length} bytes`);
    try {
      return { body, json: JSON.parse(body.toString("utf8")) as Record<string, unknown> };
    } catch (cause) {
      throw new ImageLookupError(`registry ${target.registry} sent a ${what} that is not JSON`, { cause });
    }
  };
  const failed = (response: Response, what: string) =>
    new ImageLookupError(`registry ${target.registry} answered HTTP ${response.status} for ${what} of ${target.repository}:${target.tag}`);

  const top = await get(`${base}/manifests/${encodeURIComponent(target.tag)}`, MANIFEST_TYPES);
  if (top.status === 404) {
    await top.body?.cancel();
    return undefined;
  }
  if (!top.ok) {
    await top.body?.cancel();
    throw failed(top, "the manifest");
  }
  const { body: topBody, json: topJson } = await readJson(top, "manifest");
  const digest = top.headers.get("docker-content-digest") ?? `sha256:${createHash("sha256").update(topBody).digest("hex")}`;
  let manifest = topJson;
  const mediaType = String(topJson.mediaType ?? top.headers.get("content-type") ?? "");
  if (INDEX_TYPES.has(mediaType) || Array.isArray(topJson.manifests)) {
    const entries = (topJson.manifests ?? []) as Array<{ digest?: string; platform?: { os?: string; architecture?: string } }>;
    const chosen = entries.find((entry) => entry.platform?.os === "linux" && entry.platform.architecture === "amd64") ?? entries[0];
    if (!chosen?.digest) return { digest, labels: {} };
    const child = await get(`${base}/manifests/${chosen.digest}`, MANIFEST_TYPES);
    if (!child.ok) {
      await child.body?.cancel();
      throw failed(child, "a platform manifest");
    }
    manifest = (await readJson(child, "manifest")).json;
  }
  const configDigest = (manifest.config as { digest?: unknown } | undefined)?.digest;
  if (typeof configDigest !== "string") return { digest, labels: {} };
  const known = configLabels.get(configDigest);
  if (known) return { digest, labels: known };
  const blob = await get(`${base}/blobs/${configDigest}`, ["application/octet-stream", "application/json"]);
  if (!blob.ok) {
    await blob.body?.cancel();
    throw failed(blob, "the image config");
  }
  const config = (await readJson(blob, "image config")).json as { config?: { Labels?: Record<string, string> | null } };
  const labels = config.config?.Labels ?? {};
  if (configLabels.size >= CONFIG_CACHE_ENTRIES) configLabels.delete(configLabels.keys().next().value as string);
  configLabels.set(configDigest, labels);
  return { digest, labels };
}

function basicAuthorization(auth: RegistryAuth): string {
  return `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`;
}

async function authorize(
  challenge: { scheme: string; params: Record<string, string> },
  scope: string,
  auth: RegistryAuth,
  signal: AbortSignal,
  registry: string,
): Promise<string | undefined> {
  const basic = basicAuthorization(auth);
  if (challenge.scheme === "basic") return basic;
  const { params } = challenge;
  if (challenge.scheme !== "bearer" || !params.realm) return undefined;
  const realm = new URL(params.realm);
  if (params.service) realm.searchParams.set("service", params.service);
  realm.searchParams.set("scope", params.scope ?? scope);
  const response = await fetch(realm, { headers: { authorization: basic }, signal });
  if (!response.ok) {
    await response.body?.cancel();
    throw new ImageLookupError(`registry ${registry} refused a pull token (HTTP ${response.status})`);
  }
  const token = (await response.json()) as { token?: string; access_token?: string };
  const value = token.token ?? token.access_token;
  return value ? `Bearer ${value}` : undefined;
}
