export * from "./stack.js";
export * from "./client.js";
export * from "./inspect.js";
export * from "./private-services.js";
export * from "./bridge.js";
export * from "./images.js";
