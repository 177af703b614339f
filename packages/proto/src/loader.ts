import type { ServiceDefinition } from "@grpc/grpc-js";
import { loadSync, type Options, type PackageDefinition } from "@grpc/proto-loader";
import { HEALTH_SERVICE_NAME, IMAGE_BUILDER_SERVICE_NAME } from "./messages.js";
import { HEALTH_PROTO_FILE, IMAGE_BUILDER_PROTO_FILE, PROTO_ROOT } from "./paths.js";

/** Decoding options the message interfaces in messages.ts describe. */
export const PROTO_LOADER_OPTIONS: Options = {
  keepCase: true,
  longs: String,
  enums: String,
  // absent fields decode as ""/[]/null, so handlers never see undefined strings
  defaults: true,
  arrays: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

/** One package definition holding ImageBuilderService and grpc.health.v1.Health (what reflection describes). */
export function loadProtoDefinitions(): PackageDefinition {
  return loadSync([IMAGE_BUILDER_PROTO_FILE, HEALTH_PROTO_FILE], PROTO_LOADER_OPTIONS);
}

function serviceDefinition(definition: PackageDefinition, name: string): ServiceDefinition {
  const service = definition[name];
  if (!service || "format" in service || "type" in service) {
    throw new Error(`the loaded protos define no service ${name}`);
  }
  return service as unknown as ServiceDefinition;
}

export function imageBuilderServiceDefinition(definition: PackageDefinition = loadProtoDefinitions()): ServiceDefinition {
  return serviceDefinition(definition, IMAGE_BUILDER_SERVICE_NAME);
}

export function healthServiceDefinition(definition: PackageDefinition = loadProtoDefinitions()): ServiceDefinition {
  return serviceDefinition(definition, HEALTH_SERVICE_NAME);
}
