// git over HTTP(S), by concern: session.ts (policy, credentials, deadline), transport.ts (the
// checked HTTP client), caps.ts (checkout limits), errors.ts (error codes), clone.ts, refs.ts.
export { fetchGit } from "./git/clone.js";
export { largestPackObject } from "./git/caps.js";
export { REF_LOOKUP_TIMEOUT_MS, resolveGitRevision, type ResolveRevisionOptions } from "./git/refs.js";
export { credentialFor } from "./git/session.js";
