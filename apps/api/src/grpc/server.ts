import { Server, ServerCredentials } from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { BuilderError } from "@m1l0/config";
import { IMAGE_BUILDER_SERVICE_NAME, healthServiceDefinition, imageBuilderServiceDefinition, loadProtoDefinitions } from "@m1l0/proto";
import type { Redis } from "ioredis";
import { readFileSync } from "node:fs";
import type { BuildHistory } from "../admin/history.js";
import { requireCallAuth } from "../auth/grpc.js";
import type { Authenticator } from "../auth/principal.js";
import type { SubmissionRateLimiter } from "../auth/rate-limit.js";
import type { BuildService } from "../builds.js";
import { HealthReporter } from "./health.js";
import { imageBuilderHandlers, type GrpcLogger } from "./image-builder.js";

export interface GrpcTlsFiles {
  certFile?: string | undefined;
  keyFile?: string | undefined;
}

export interface GrpcServerOptions {
  builds: BuildService;
  /** the same history REST reads (Redis, then the archive), so both protocols know the same builds */
  history: BuildHistory;
  redis: Redis;
  host: string;
  port: number;
  tls?: GrpcTlsFiles;
  logger: GrpcLogger;
  /** ImageBuilderService calls need `authorization: Bearer <token>` metadata; health and reflection stay open */
  auth: Authenticator;
  /** per-token Build budget (shared with REST POST /builds) */
  rateLimiter?: SubmissionRateLimiter;
  /** how long close() lets open calls finish before cancelling them */
  shutdownGraceMs?: number;
}

export interface RunningGrpcServer {
  server: Server;
  /** the bound port (useful with port 0) */
  port: number;
  /** host:port to dial */
  address: string;
  health: HealthReporter;
  close(): Promise<void>;
}

/** TLS from PEM files when both are set, plaintext when neither; one without the other is a mistake. */
export function grpcCredentials(tls: GrpcTlsFiles = {}): ServerCredentials {
  const { certFile, keyFile } = tls;
  if (!certFile && !keyFile) return ServerCredentials.createInsecure();
  if (!certFile || !keyFile) {
    const field = certFile ? "GRPC_TLS_KEY_FILE" : "GRPC_TLS_CERT_FILE";
    throw new BuilderError("VALIDATION_FAILED", `${field}: is required when the other gRPC TLS file is set`, { issues: [{ field, message: "is required with its pair" }] });
  }
  return ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(certFile), private_key: readFileSync(keyFile) }], false);
}

function formatAddress(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Starts ImageBuilderService, grpc.health.v1.Health and server reflection on one port. Only
 * ImageBuilderService needs a token: health is for probes, and reflection describes the
 * published contract (packages/proto), no data.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const definitions = loadProtoDefinitions();
  const server = new Server();
  server.addService(imageBuilderServiceDefinition(definitions), requireCallAuth(imageBuilderHandlers(options), options.auth, options.logger));
  const health = new HealthReporter(options.redis, [IMAGE_BUILDER_SERVICE_NAME]);
  server.addService(healthServiceDefinition(definitions), health.handlers());
  new ReflectionService(definitions).addToServer(server);

  const credentials = grpcCredentials(options.tls);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(formatAddress(options.host, options.port), credentials, (error, bound) => (error ? reject(error) : resolve(bound))),
  );
  await health.start();
  const address = formatAddress(options.host, port);
  options.logger.info({ address, tls: Boolean(options.tls?.certFile) }, "gRPC server listening");

  const grace = options.shutdownGraceMs ?? 5_000;
  return {
    server,
    port,
    address,
    health,
    close: () =>
      new Promise<void>((resolve) => {
        health.stop();
        // streams follow builds for minutes; after the grace period they are cancelled
        const force = setTimeout(() => server.forceShutdown(), grace);
        force.unref();
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}
