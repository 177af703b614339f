export * from "./jobs.js";
export * from "./redis.js";
export * from "./store.js";
export type { LiveRecord } from "./newest-first.js";
export * from "./cancel.js";
export * from "./unavailable.js";
export * from "./cache-images.js";
export * from "./log-line.js";
export * from "./uploads.js";
