import type { S3Client } from "@m1l0/storage";

export interface SourcePolicy {
  /** allow plain-http git URLs (tokens would travel in clear text) */
  allowHttp: boolean;
  /** allow dir:///abs/path sources (a directory on the worker itself) */
  allowDir: boolean;
  /** dir:// paths must be under one of these (absolute) */
  dirRoots?: string[];
  /** let git hosts resolve to private/loopback/link-local addresses (cloud metadata stays refused) */
  allowPrivateHosts?: boolean;
  /** host names, addresses or CIDRs a git source may use even when private (tests: 127.0.0.0/8) */
  hostAllowlist?: string[];
  /** wall-clock cap on one git clone (default DEFAULT_CLONE_LIMITS.timeoutMs) */
  cloneTimeoutMs?: number;
  /** cap on bytes received from the git server for one clone (default DEFAULT_CLONE_LIMITS.maxBytes) */
  cloneMaxBytes?: number;
  /** cap on the bytes of the checked-out working tree (what the pack inflates to) */
  cloneMaxCheckoutBytes?: number;
  /** cap on the files (and symlinks) of the checked-out working tree */
  cloneMaxCheckoutFiles?: number;
}

export const DEFAULT_CLONE_LIMITS = Object.freeze({
  timeoutMs: 10 * 60_000,
  maxBytes: 2 * 1024 ** 3,
  maxCheckoutBytes: 2 * 1024 ** 3,
  maxCheckoutFiles: 200_000,
});

export interface GitCredential {
  /** host[:port], as in the repository URL */
  host: string;
  username: string;
  token: string;
}

export interface ArchiveLimits {
  /** bytes downloaded (the .tar.gz itself) */
  maxCompressedBytes: number;
  /** bytes after gunzip (tar headers and padding included) */
  maxUncompressedBytes: number;
  /** tar entries of any kind */
  maxEntries: number;
}

export const DEFAULT_ARCHIVE_LIMITS: Readonly<ArchiveLimits> = Object.freeze({
  maxCompressedBytes: 2 * 1024 ** 3,
  maxUncompressedBytes: 8 * 1024 ** 3,
  maxEntries: 200_000,
});

export interface FetchSourceOptions {
  /** the request's `source` field (already URL-validated) */
  source: string;
  /** an empty dir the caller created and will delete; fetched files go under it */
  workDir: string;
  policy: SourcePolicy;
  /** sent only to the matching host */
  gitCredentials?: GitCredential[];
  s3?: { client: S3Client };
  limits?: Partial<ArchiveLimits>;
  /** progress lines for the build log; never contain credentials */
  onLog?: (line: string) => void;
  signal?: AbortSignal;
}

export interface FetchedSource {
  kind: "git" | "s3" | "dir";
  /** directory to build from */
  root: string;
  /** resolved commit sha (git) */
  commit?: string;
  /** the ref that was checked out (git): as requested, or the remote's default branch */
  ref?: string;
}

export interface GitSource {
  url: string;
  ref?: string;
  subdir?: string;
}
