export * from "./app.js";
export * from "./builds.js";
export * from "./env.js";
