import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import { BUILD_STATUSES, buildConfigSchema } from "@m1l0/config";
import type { FastifyInstance } from "fastify";
import { z } from "zod";

export const DOCS_PATH = "/docs";

/** JSON Schema of exactly what POST /builds accepts (the zod schema the service validates with). */
export const buildConfigJsonSchema = z.toJSONSchema(buildConfigSchema, { io: "input", target: "openapi-3.0" }) as Record<string, unknown>;

const errorSchema = {
  type: "object",
  properties: {
    error: {
      type: "object",
      required: ["code", "message"],
      properties: {
        code: { type: "string" },
        message: { type: "string" },
        issues: { type: "array", items: { type: "object", properties: { field: { type: "string" }, message: { type: "string" } } } },
      },
    },
  },
} as const;
const idParam = { type: "object", required: ["id"], properties: { id: { type: "string", description: "build id, e.g. bld_…" } } } as const;
const recordSchema = { type: "object", additionalProperties: true, description: "build record (status, config, timestamps, image, error, contextDigest, artifacts)" } as const;

/**
 * Documentation per route, applied only to the OpenAPI document (never to validation: the
 * BuildService validates with the zod schemas and reports every field in its own format).
 */
const ROUTE_DOCS: Record<string, Record<string, unknown>> = {
  "POST /builds": {
    summary: "Submit a build",
    description: "Accepts JSON or YAML (application/yaml). Returns 202 with the new id, 200 when a build with this id already exists.",
    body: buildConfigJsonSchema,
    response: {
      202: { type: "object", properties: { id: { type: "string" }, status: { type: "string" }, links: { type: "object", additionalProperties: { type: "string" } } } },
      400: errorSchema,
      503: errorSchema,
    },
  },
  "GET /builds": {
    summary: "List builds, newest first, a page at a time (Redis and the S3 archive alike)",
    description:
      "Builds ordered by creation time, newest first (ties by id). A user token sees the builds it submitted, an admin token all. " +
      "When `nextCursor` is not null, pass it as `cursor` (with the same status) for the next page; cursors are opaque positions, " +
      "so builds submitted meanwhile never shift or repeat the following pages. An invalid cursor is a 400 naming `cursor`.",
    querystring: {
      type: "object",
      properties: {
        status: { type: "string", enum: [...BUILD_STATUSES] },
        limit: { type: "integer", minimum: 1, maximum: 500, default: 50 },
        cursor: { type: "string", description: "nextCursor of the previous page (opaque)" },
      },
    },
    response: {
      200: {
        type: "object",
        required: ["builds", "nextCursor"],
        properties: {
          builds: { type: "array", items: recordSchema },
          nextCursor: { type: "string", nullable: true, description: "cursor of the next page; null on the last page" },
        },
      },
      400: errorSchema,
    },
  },
  "GET /builds/:id": {
    summary: "One build's record",
    params: idParam,
    response: { 200: recordSchema, 404: errorSchema },
  },
  "GET /builds/:id/logs": {
    summary: "The build's log; ?follow=1 or Accept: text/event-stream streams it as Server-Sent Events",
    description:
      "Plain text, one `<timestamp> [phase] line` per event. With follow, SSE events `status` and `log` carry the event JSON, ids usable as Last-Event-ID; an `end` event closes the stream. After Redis retention the archived log (logs/<id>.log) is served.",
    params: idParam,
    querystring: { type: "object", properties: { follow: { type: "string", enum: ["1", "true"] } } },
    response: { 200: { description: "text/plain log or text/event-stream", type: "string" }, 404: errorSchema },
  },
  "GET /healthz": { summary: "Liveness" },
  "GET /readyz": { summary: "Readiness (Redis reachable)" },
};

/** Registers /docs (Swagger UI) and /docs/json; must run before the routes it documents are added. */
export async function registerApiDocs(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: { title: "M1L0 Image Builder API", version: "0.1.0", description: "Turns ML projects into pushed Docker images." },
    },
    transform: ({ schema, url, route }) => {
      const method = Array.isArray(route.method) ? route.method[0] : route.method;
      const documented = ROUTE_DOCS[`${method} ${url}`];
      if (documented) return { schema: { ...schema, ...documented } as typeof schema, url };
      // the dashboard and the docs themselves are not part of the API
      const internal = url.startsWith("/admin") || url.startsWith(DOCS_PATH) || url === "/metrics";
      return { schema: internal ? ({ ...schema, hide: true } as typeof schema) : schema, url };
    },
  });
  await app.register(swaggerUi, { routePrefix: DOCS_PATH });
}
