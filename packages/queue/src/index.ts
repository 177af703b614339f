export * from "./jobs.js";
export * from "./redis.js";
export * from "./store.js";
