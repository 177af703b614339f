export * from "./types.js";
export * from "./dockerhub.js";
export * from "./errors.js";
