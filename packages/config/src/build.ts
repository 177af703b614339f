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
  commit?: string;
  baseImage?: string;
  worker?: string;
  image?: PushedImage;
  error?: BuildFailure;
}

export type BuildEvent =
  | { type: "status"; status: BuildStatus; at: string; error?: BuildFailure; image?: PushedImage }
  | { type: "log"; phase: "fetch" | "build" | "push"; line: string; at: string };
