import { headObjectVersion, type S3Client } from "@m1l0/storage";
import { resolveGitRevision } from "./git.js";
import { parseS3Source } from "./s3.js";
import type { GitCredential, SourcePolicy } from "./types.js";

export interface SourceIdentityOptions {
  source: string;
  policy: SourcePolicy;
  gitCredentials?: GitCredential[];
  s3?: { client: S3Client };
  signal?: AbortSignal;
}

export interface SourceIdentity {
  /** stable text naming exactly this content: `git:<commit>` or `s3:<etag>[:<version>]` */
  id: string;
  /** the resolved commit, for git sources */
  commit?: string;
}

/**
 * Names the exact content a source points at without fetching it: the commit a git ref
 * resolves to (one ref advertisement) or an s3 object's ETag/version (one HEAD). Undefined
 * when it cannot be known up front (dir:// sources, a ref the server does not advertise):
 * such builds always run.
 */
export async function resolveSourceIdentity(options: SourceIdentityOptions): Promise<SourceIdentity | undefined> {
  const protocol = new URL(options.source).protocol;
  if (protocol === "https:" || protocol === "http:") {
    const commit = await resolveGitRevision(options);
    return commit ? { id: `git:${commit}`, commit } : undefined;
  }
  if (protocol === "s3:" && options.s3) {
    const { bucket, key } = parseS3Source(options.source);
    const head = await headObjectVersion(options.s3.client, bucket, key, options.signal);
    if (!head.etag) return undefined;
    return { id: `s3:${bucket}/${key}:${head.etag}${head.versionId ? `:${head.versionId}` : ""}` };
  }
  return undefined;
}
