export * from "./types.js";
export * from "./dockerhub.js";
export * from "./ecr.js";
export * from "./oci.js";
export * from "./errors.js";
export * from "./manifest.js";
