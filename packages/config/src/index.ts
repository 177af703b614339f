export * from "./errors.js";
export * from "./build-config.js";
export * from "./parse.js";
export * from "./build.js";
export * from "./reference.js";
export * from "./env.js";
export * from "./canonical.js";
