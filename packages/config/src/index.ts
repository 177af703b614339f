export * from "./errors.js";
export * from "./build-config.js";
export * from "./parse.js";
export * from "./build.js";
