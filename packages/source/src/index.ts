export { fetchSource } from "./fetch.js";
export { describeSource, parseGitSource } from "./describe.js";
export { extractTarGz, type ExtractOptions, type ExtractStats } from "./archive.js";
export { NetworkGuard, classifyAddress, type NetworkPolicy } from "./network.js";
export {
  DEFAULT_ARCHIVE_LIMITS,
  DEFAULT_CLONE_LIMITS,
  type ArchiveLimits,
  type FetchSourceOptions,
  type FetchedSource,
  type GitCredential,
  type GitSource,
  type SourcePolicy,
} from "./types.js";
export { resolveGitRevision, type ResolveRevisionOptions } from "./git.js";
export { resolveSourceIdentity, type SourceIdentity, type SourceIdentityOptions } from "./identity.js";
