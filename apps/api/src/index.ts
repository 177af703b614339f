export * from "./app.js";
export * from "./builds.js";
export * from "./env.js";
export * from "./grpc/server.js";
export * from "./grpc/errors.js";
