export * from "./cli.js";
export * from "./env.js";
export * from "./format.js";
export * from "./progress.js";
