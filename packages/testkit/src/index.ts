export { startHungServer, type HungServer } from "./hung-peer.js";
export { settlesWithin, withGcPressure, type Settled } from "./gc.js";
export { tarOf, untar } from "./tar.js";
export { ROOT_DIR, freePort, loadServices, services, type Services } from "./services.js";
export { lineCollector, spawnNode, stopChild, waitFor } from "./process.js";
export { apiFetch, authHeaders, registerApiToken } from "./api.js";
export { createGitFixture } from "./git.js";
export { createStackTokens, startStack, type RunningStack, type StackOptions, type StackTokens } from "./stack.js";
export { findNeedles, scanRedis, scanS3, type Finding } from "./secret-scan.js";
