import { BuilderError } from "@m1l0/config";
import { describeSource } from "./describe.js";
import { fetchDir } from "./dir.js";
import { fetchGit } from "./git.js";
import { fetchS3 } from "./s3.js";
import type { FetchSourceOptions, FetchedSource } from "./types.js";

/**
 * Fetches a build's source into `options.workDir` (git, s3) or validates it in place (dir).
 * Failures are BuilderErrors (SOURCE_*, ARCHIVE_INVALID, VALIDATION_FAILED); an aborted
 * `signal` rejects with the signal's reason.
 */
export async function fetchSource(options: FetchSourceOptions): Promise<FetchedSource> {
  let protocol: string;
  try {
    protocol = new URL(options.source).protocol;
  } catch {
    throw new BuilderError("VALIDATION_FAILED", `source ${describeSource(options.source)} is not a URL`, {
      issues: [{ field: "source", message: "must be a URL" }],
    });
  }
  switch (protocol) {
    case "https:":
    case "http:":
      return fetchGit(options);
    case "s3:":
      return fetchS3(options);
    case "dir:":
      return fetchDir(options);
    default:
      throw new BuilderError("SOURCE_NOT_ALLOWED", `unsupported source scheme ${protocol.replace(/:$/, "")}: use https://host/repo.git, s3://bucket/key.tar.gz or dir:///path`);
  }
}
