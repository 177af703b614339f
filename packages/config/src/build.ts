import { randomBytes } from "node:crypto";
import type { BuildConfig } from "./build-config.js";
import type { ErrorCode } from "./errors.js";

export const BUILD_STATUSES = ["queued", "fetching", "building", "pushing", "succeeded", "failed", "cancelled", "cached"] as const;
export type BuildStatus = (typeof BUILD_STATUSES)[number];
export const TERMINAL_STATUSES: readonly BuildStatus[] = ["succeeded", "failed", "cancelled", "cached"];
export const isTerminal = (status: BuildStatus): boolean => TERMINAL_STATUSES.includes(status);

/** Client-chosen ids (gRPC) must fit in Redis keys, S3 keys and URLs unescaped. */
export const BUILD_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

const ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";
/** `bld_` + 10 chars of time (sortable) + 16 random chars, Crockford base32. */
export function newBuildId(now = Date.now()): string {
  let time = "";
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ID_ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const random = Array.from(randomBytes(16), (byte) => ID_ALPHABET[byte % 32]).join("");
  return `bld_${time}${random}`;
}

export interface PushedImage {
  registry: string;
  repository: string;
  tag: string;
  /** full pullable reference, registry/repository:tag */
  reference: string;
  /** manifest digest, sha256:… */
  digest?: string;
}

export interface BuildFailure {
  code: ErrorCode;
  message: string;
}

export interface BuildRecord {
  id: string;
  status: BuildStatus;
  config: BuildConfig;
  createdAt: string;
  updatedAt: string;
  /** when each status was entered (ISO timestamps) */
  timestamps: Partial<Record<BuildStatus, string>>;
  attempts: number;
  /** name of the API token that submitted the build (never the token); absent when auth is disabled */
  submitter?: string;
  commit?: string;
  baseImage?: string;
  /** the layouts found in the source and installed by the generated Dockerfile, in layer order (apt.txt, requirements.txt, pyproject.toml, setup.py); absent for a user's Dockerfile */
  layouts?: string[];
  /**
   * sha256 of everything that shapes the image (source content, config, generator version,
   * base image content, the operator's apt sources); pushed as the label ai.m1l0.build-key and compared before building
   */
  buildKey?: string;
  /**
   * hash of the request (config, submitter) while the build is in flight: an identical
   * request made meanwhile attaches to this build instead of starting another
   */
  requestKey?: string;
  worker?: string;
  image?: PushedImage;
  error?: BuildFailure;
  /** `sha256:<hex>` of the uncompressed tar context Docker received; archived as contexts/<hex>.tar.gz */
  contextDigest?: string;
  /** where the build's archived artifacts stand (uploads happen after the build, in the background) */
  artifacts?: BuildArtifacts;
  /** set by DELETE /builds/:id; a worker that missed the cancel message still sees it here */
  cancelRequestedAt?: string;
  /** one entry per failed attempt, oldest first (a retried build keeps its history) */
  attemptErrors?: AttemptError[];
}

export interface AttemptError {
  attempt: number;
  code: ErrorCode;
  message: string;
  at: string;
}

/** pending: not stored yet (retrying while the store is unreachable); failed: gave up or never captured. */
export type ArtifactUploadStatus = "pending" | "uploaded" | "failed";
export interface BuildArtifacts {
  log?: ArtifactUploadStatus;
  context?: ArtifactUploadStatus;
  record?: ArtifactUploadStatus;
}

export type BuildEvent =
  | { type: "status"; status: BuildStatus; at: string; error?: BuildFailure; image?: PushedImage }
  | { type: "log"; phase: "fetch" | "build" | "push"; line: string; at: string };

/** One event as one log line: `2026-… [build] Step 1/8 : FROM …` (REST logs and archived logs share it). */
export function formatBuildEvent(event: BuildEvent): string {
  if (event.type === "log") return `${event.at} [${event.phase}] ${event.line}`;
  const detail = event.error ? `: ${event.error.code}: ${event.error.message}` : event.image ? `: ${event.image.reference}@${event.image.digest ?? ""}` : "";
  return `${event.at} [status] ${event.status}${detail}`;
}
