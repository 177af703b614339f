/**
 * TypeScript shapes of the wire messages, as @grpc/proto-loader decodes them with
 * PROTO_LOADER_OPTIONS (field names kept as written, enums as names). Every field is
 * optional because proto3 cannot tell an empty string from an absent one and clients
 * may omit anything; decoded requests carry "" / [] / null for absent fields.
 */
export const IMAGE_BUILDER_PACKAGE = "m1l0_services.imagebuilder.v1";
export const IMAGE_BUILDER_SERVICE_NAME = `${IMAGE_BUILDER_PACKAGE}.ImageBuilderService`;
export const HEALTH_SERVICE_NAME = "grpc.health.v1.Health";

export interface BuildConfigMessage {
  namespace?: string;
  name?: string;
  framework?: string;
  version?: string;
  pyversion?: string;
  resource?: string;
  entry?: string;
  revision?: string;
  source?: string;
  service?: string;
  repository?: string;
  dockerfile?: string;
}

export interface BuildIgnoresMessage {
  value?: string;
}

export interface BuildTagsMessage {
  name?: string;
  value?: string;
}

export interface BuildRequestMessage {
  id?: string;
  config?: BuildConfigMessage | null;
  ignores?: BuildIgnoresMessage[];
  tags?: BuildTagsMessage[];
}

export interface PushRequestMessage {
  id?: string;
  config?: BuildConfigMessage | null;
  tags?: BuildTagsMessage[];
}

export interface FindRequestMessage {
  id?: string;
}

export interface FindResponseMessage {
  id: string;
  /** digest reference, registry/repository@sha256:… */
  image: string;
  /** tagged reference, registry/repository:tag */
  repository: string;
}

export interface BuildResponseMessage {
  body: string;
}

export interface PushResponseMessage {
  body: string;
}

export const SERVING_STATUSES = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"] as const;
export type ServingStatus = (typeof SERVING_STATUSES)[number];

export interface HealthCheckRequestMessage {
  service?: string;
}

export interface HealthCheckResponseMessage {
  status: ServingStatus;
}
