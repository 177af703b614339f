export * from "./paths.js";
export * from "./messages.js";
export * from "./loader.js";
export * from "./mapping.js";
