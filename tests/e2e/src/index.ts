export * from "./stack.js";
export * from "./client.js";
