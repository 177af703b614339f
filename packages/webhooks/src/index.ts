export * from "./config.js";
export * from "./deliver.js";
export * from "./delivery-worker.js";
export * from "./history.js";
export * from "./metrics.js";
export * from "./notifier.js";
export * from "./payload.js";
export * from "./signature.js";
