export * from "./docker.js";
export * from "./env.js";
export * from "./logger.js";
export * from "./pipeline.js";
export * from "./worker.js";
export * from "./cleanup.js";
export * from "./builder.js";
