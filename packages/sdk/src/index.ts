export { M1l0Client, isBuildStatus } from "./client.js";
export type { BuildsPage, ListBuildsOptions, M1l0ClientOptions, SubmitOptions, SubmittedBuild, WaitOptions, WatchOptions, WatchedEvent } from "./client.js";
export { API_UNREACHABLE, M1l0ApiError, M1l0TimeoutError } from "./errors.js";
export { readSseFrames, type SseFrame } from "./sse.js";
export {
  BUILD_STATUSES,
  TERMINAL_STATUSES,
  isTerminal,
  type BuildConfigInput,
  type BuildEvent,
  type BuildFailure,
  type BuildRecord,
  type BuildStatus,
  type FieldIssue,
  type PushedImage,
  newBuildId,
} from "@m1l0/config";
/**
 * The BullMQ job contract, for orchestrators that share the builder's Redis and enqueue
 * directly instead of calling the API. A direct enqueuer must ALSO create the build
 * record first (see README: BuildStore.create, then queue.add with jobId = buildId),
 * otherwise the worker has no record to update and the build is invisible to the API.
 */
export { BUILD_JOB_NAME, BUILD_QUEUE_NAME, BuildStore, DEFAULT_BUILD_JOB_OPTIONS, buildJobSchema, type BuildJobData } from "@m1l0/queue";
