import * as grpc from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import Docker from "dockerode";
import { Redis } from "ioredis";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { BuildConfigMessage } from "@m1l0/proto";
import { apiFetch, ROOT_DIR, getBuild, getLog, services, startStack, waitUntil, type RunningStack } from "../src/index.js";

/*
 * A client that knows only the published contract: the .proto text below is a separate
 * copy (not imported from packages/proto), as an existing pipeline would have it.
 */
const IMAGE_BUILDER_PROTO = `
syntax = "proto3";
package m1l0_services.imagebuilder.v1;
message BuildConfig {
  string namespace = 1; string name = 2; string framework = 3; string version = 4;
  string pyversion = 5; string resource = 6; string entry = 7; string revision = 8;
  string source = 9; string service = 10; string repository = 11; string dockerfile = 12;
}
message BuildIgnores { string value = 1; }
message BuildTags { string name = 1; string value = 2; }
message BuildRequest { string id = 1; BuildConfig config = 2; repeated BuildIgnores ignores = 3; repeated BuildTags tags = 4; }
message PushRequest { string id = 1; BuildConfig config = 2; repeated BuildTags tags = 3; }
message FindRequest { string id = 1; }
message FindResponse { string id = 1; string image = 2; string repository = 3; }
message BuildResponse { string body = 1; }
message PushResponse { string body = 1; }
service ImageBuilderService {
  rpc Build(BuildRequest) returns (stream BuildResponse);
  rpc Push(PushRequest) returns (stream PushResponse);
  rpc Find(FindRequest) returns (FindResponse);
}
`;

const HEALTH_PROTO = `
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse { enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; } ServingStatus status = 1; }
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
`;

// the subset of grpc/reflection/v1alpha/reflection.proto this test uses, field numbers as published
const REFLECTION_PROTO = `
syntax = "proto3";
package grpc.reflection.v1alpha;
message ServerReflectionRequest {
  string host = 1;
  oneof message_request { string file_by_filename = 3; string file_containing_symbol = 4; string list_services = 7; }
}
message FileDescriptorResponse { repeated bytes file_descriptor_proto = 1; }
message ServiceResponse { string name = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ErrorResponse { int32 error_code = 1; string error_message = 2; }
message ServerReflectionResponse {
  string valid_host = 1;
  ServerReflectionRequest original_request = 2;
  oneof message_response { FileDescriptorResponse file_descriptor_response = 4; ListServiceResponse list_services_response = 6; ErrorResponse error_response = 7; }
}
service ServerReflection { rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse); }
`;

interface BuildRequest {
  id: string;
  config?: BuildConfigMessage;
  ignores?: Array<{ value: string }>;
  tags?: Array<{ name: string; value: string }>;
}
interface FindResponse {
  id: string;
  image: string;
  repository: string;
}
type Unary<Req, Res> = (request: Req, callback: (error: grpc.ServiceError | null, response?: Res) => void) => grpc.ClientUnaryCall;
interface ImageBuilderClient extends grpc.Client {
  Build(request: BuildRequest): grpc.ClientReadableStream<{ body: string }>;
  Push(request: { id: string; config?: BuildConfigMessage }): grpc.ClientReadableStream<{ body: string }>;
  Find: Unary<{ id: string }, FindResponse>;
}
interface HealthClient extends grpc.Client {
  Check: Unary<{ service: string }, { status: string }>;
}
interface ReflectionResponse {
  list_services_response?: { service: Array<{ name: string }> };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_message: string };
}
interface ReflectionClient extends grpc.Client {
  ServerReflectionInfo(): grpc.ClientDuplexStream<Record<string, string>, ReflectionResponse>;
}
type ClientConstructor<T> = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => T;

const protoDir = mkdtempSync(path.join(tmpdir(), "m1l0-grpc-contract-"));
function loadContract(fileName: string, text: string): grpc.GrpcObject {
  const file = path.join(protoDir, fileName);
  writeFileSync(file, text);
  return grpc.loadPackageDefinition(loadSync(file, { keepCase: true, enums: String, defaults: true, oneofs: true }));
}
const lookup = (root: grpc.GrpcObject, dotted: string) => dotted.split(".").reduce<unknown>((node, key) => (node as Record<string, unknown>)[key], root);
const ImageBuilder = lookup(loadContract("imagebuilder.proto", IMAGE_BUILDER_PROTO), "m1l0_services.imagebuilder.v1.ImageBuilderService") as ClientConstructor<ImageBuilderClient>;
const Health = lookup(loadContract("health.proto", HEALTH_PROTO), "grpc.health.v1.Health") as ClientConstructor<HealthClient>;
const Reflection = lookup(loadContract("reflection.proto", REFLECTION_PROTO), "grpc.reflection.v1alpha.ServerReflection") as ClientConstructor<ReflectionClient>;

const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const registryAuth = { username: services.registryUsername, password: services.registryPassword, serveraddress: services.registryHost };
const mnist = parse(readFileSync(path.join(ROOT_DIR, "examples/mnist/m1l0.yaml"), "utf8")) as { tags: Array<{ Key: string; Value: string }>; ignores: string[] };
const run = Date.now().toString(36);

/** The seed config in the original's wire form, pointed at the test git server. */
function seedRequest(id: string, revision: string, overrides: BuildConfigMessage = {}): BuildRequest {
  return {
    id,
    config: {
      namespace: "m1l0examples",
      name: "mnist",
      framework: "python",
      pyversion: "3.11",
      resource: "cpu",
      entry: "main.py",
      revision,
      source: `${services.gitServerUrl}/examples/mnist.git`,
      service: "dockerhub",
      repository: "m1l0/mnist",
      ...overrides,
    },
    tags: mnist.tags.map((tag) => ({ name: tag.Key, value: tag.Value })),
    ignores: mnist.ignores.map((value) => ({ value })),
  };
}

interface Collected {
  bodies: string[];
  arrivals: number[];
  error?: grpc.ServiceError;
}

/** Reads a server stream to its end, noting when each message arrived; calls onFirst after the first. */
function collect(stream: grpc.ClientReadableStream<{ body: string }>, onFirst?: () => void): Promise<Collected> {
  const result: Collected = { bodies: [], arrivals: [] };
  return new Promise((resolve) => {
    stream.on("data", (message: { body: string }) => {
      result.bodies.push(message.body);
      result.arrivals.push(Date.now());
      if (result.bodies.length === 1) onFirst?.();
    });
    stream.on("error", (error: grpc.ServiceError) => resolve({ ...result, error }));
    stream.on("end", () => resolve(result));
  });
}

function unary<Req, Res>(method: Unary<Req, Res>, client: grpc.Client, request: Req): Promise<Res> {
  return new Promise((resolve, reject) => method.call(client, request, (error, response) => (error ? reject(error) : resolve(response as Res))));
}

let stack: RunningStack;
const clients: grpc.Client[] = [];
/** Sends `authorization: Bearer <token>` metadata on every call (an original-style client adds it per call). */
function bearer(token: string): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/** `token` null: a client that sends no authorization metadata. */
function connect<T extends grpc.Client>(Client: ClientConstructor<T>, token: string | null = stack.token): T {
  // a channel of its own, as a separate client process would have
  const client = new Client(stack.grpcAddress, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1, ...(token ? { interceptors: [bearer(token)] } : {}) });
  clients.push(client);
  return client;
}

beforeAll(async () => {
  stack = await startStack();
});

afterAll(async () => {
  for (const client of clients) client.close();
  await stack?.stop();
  rmSync(protoDir, { recursive: true, force: true });
});

describe("gRPC ImageBuilderService (client from the contract only, real stack)", () => {
  it("Build streams live, a second client sees every line, then Push and Find give a pullable image", async () => {
    const id = `grpc-flow-${run}`;
    const revision = `grpc-${run}`;
    const first = connect(ImageBuilder);
    const second = connect(ImageBuilder);
    let secondDone: Promise<Collected> | undefined;
    // the second client attaches (same id) once the build is under way, and must replay from the start
    const firstDone = collect(first.Build(seedRequest(id, revision)), () => {
      secondDone = collect(second.Build(seedRequest(id, revision)));
    });
    const built = await firstDone;
    for (const body of built.bodies) console.log(`[Build] ${body}`);
    expect(built.error, `${built.error?.message}\n${stack.logs.join("\n")}`).toBeUndefined();
    const reference = `${services.registryHost}/m1l0/mnist:${revision}`;
    expect(built.bodies.at(-1)).toBe(`imagename: ${reference}`);
    expect(built.bodies.some((body) => /resolved commit [0-9a-f]{40}/.test(body))).toBe(true);
    expect(built.bodies.some((body) => /^Step \d+\/\d+ : RUN python3 -m pip install/.test(body))).toBe(true);
    // Build carries the fetch and build phases only
    expect(built.bodies.some((body) => body.startsWith("pushing "))).toBe(false);

    const attached = await secondDone!;
    expect(attached.error).toBeUndefined();
    expect(attached.bodies).toEqual(built.bodies);

    const pushed = await collect(first.Push({ id }));
    for (const body of pushed.bodies) console.log(`[Push] ${body}`);
    expect(pushed.error, pushed.error?.message).toBeUndefined();
    expect(pushed.bodies[0]).toBe(`pushing ${reference}`);
    expect(pushed.bodies.at(-1)).toBe(`repository: ${reference}`);
    expect(pushed.bodies.some((body) => /^pushed .*@sha256:[0-9a-f]{64}$/.test(body))).toBe(true);

    const found = await unary(first.Find, first, { id });
    expect(found).toEqual({ id, image: expect.stringMatching(new RegExp(`^${services.registryHost}/m1l0/mnist@sha256:[0-9a-f]{64}$`)), repository: reference });

    // streamed, not delivered at the end: the first line arrived before the build phase was over
    const record = await getBuild(stack.apiUrl, id);
    expect(record.status).toBe("succeeded");
    expect(built.arrivals[0]).toBeLessThan(Date.parse(record.timestamps.pushing!));
    expect(built.arrivals[0]).toBeLessThan(Date.parse(record.timestamps.succeeded!));
    expect(found.image).toBe(`${services.registryHost}/m1l0/mnist@${record.image!.digest}`);

    // one build for two Build calls: one record created, one queued event, one attempt
    const log = await getLog(stack.apiUrl, id);
    expect(log.match(/\[status\] queued/g)).toHaveLength(1);
    expect(log.match(/\[status\] fetching/g)).toHaveLength(1);
    expect(record.attempts).toBe(1);
    expect(stack.logs.some((line) => line.includes(id) && line.includes("attached to an existing build"))).toBe(true);
    const listed = (await (await apiFetch(`${stack.apiUrl}/builds?limit=500`)).json()) as { builds: Array<{ id: string }> };
    expect(listed.builds.filter((build) => build.id === id)).toHaveLength(1);

    // the digest reference Find returned is what a pipeline pulls
    await docker.getImage(reference).remove({ force: true });
    const pull = await docker.pull(found.image, { authconfig: registryAuth });
    await new Promise<void>((resolve, reject) => docker.modem.followProgress(pull, (error) => (error ? reject(error) : resolve())));
    const pulledImage = await docker.getImage(found.image).inspect();
    expect(pulledImage.RepoDigests).toContain(found.image);
    expect(pulledImage.Config.Labels).toMatchObject({ "ai.m1l0.build-id": id, "ai.m1l0.tag.Project": "mnist" });
  });

  it("once Redis forgets a build, Find and Push answer from the archive as GET /builds/:id does", async () => {
    const id = `grpc-archived-${run}`;
    const revision = `grpc-archived-${run}`;
    const client = connect(ImageBuilder);
    const built = await collect(client.Build(seedRequest(id, revision)));
    expect(built.error, built.error?.message).toBeUndefined();
    const live = await waitUntil(stack.apiUrl, id, (record) => (record as { artifacts?: { record?: string } }).artifacts?.record === "uploaded", 120_000);
    const foundLive = await unary(client.Find, client, { id });
    const pushedLive = await collect(client.Push({ id }));
    expect(pushedLive.error).toBeUndefined();

    // Redis retention is over for this build: only the archive has it
    const redis = new Redis(services.redisUrl);
    try {
      expect(await redis.del(`${stack.keyPrefix}build:${id}:events`, `${stack.keyPrefix}build:${id}`)).toBe(2);
      await redis.zrem(`${stack.keyPrefix}builds`, id);
    } finally {
      redis.disconnect();
    }
    const rest = await apiFetch(`${stack.apiUrl}/builds/${id}`);
    expect(rest.status).toBe(200);
    expect(((await rest.json()) as { image?: { digest?: string } }).image?.digest).toBe(live.image?.digest);
    expect(await unary(client.Find, client, { id })).toEqual(foundLive);
    const pushedArchived = await collect(client.Push({ id }));
    expect(pushedArchived.error, pushedArchived.error?.message).toBeUndefined();
    expect(pushedArchived.bodies).toEqual(pushedLive.bodies);
    expect(pushedArchived.bodies.at(-1)).toBe(`repository: ${services.registryHost}/m1l0/mnist:${revision}`);
    // another token still cannot see it
    const other = connect(ImageBuilder, stack.tokens.alice);
    await expect(unary(other.Find, other, { id })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it("a failed build ends Build and Push with FAILED_PRECONDITION carrying the reason", async () => {
    const client = connect(ImageBuilder);
    const id = `grpc-fail-${run}`;
    let findWhileRunning: Promise<unknown> | undefined;
    const built = await collect(client.Build(seedRequest(id, `fail-${run}`, { entry: "train.py" })), () => {
      findWhileRunning = unary(client.Find, client, { id }).catch((error: unknown) => error);
    });
    expect(built.bodies.length).toBeGreaterThan(0);
    expect(built.error?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(built.error?.details).toMatch(/entry file "train.py" was not found/);
    expect(built.error?.metadata.get("m1l0-error-code")).toEqual(["ENTRY_NOT_FOUND"]);
    // Find before the build finished: not an image yet
    expect(await findWhileRunning).toMatchObject({ code: grpc.status.FAILED_PRECONDITION });

    const pushed = await collect(client.Push({ id }));
    expect(pushed.error?.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(pushed.error?.details).toMatch(/entry file "train.py" was not found/);
  });

  it("rejects an invalid config or id with INVALID_ARGUMENT naming the fields, and enqueues nothing", async () => {
    const client = connect(ImageBuilder);
    const id = `grpc-invalid-${run}`;
    const invalid = await collect(client.Build(seedRequest(id, "v1", { service: "", repository: "M1L0/Not Valid", pyversion: "three" })));
    expect(invalid.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(invalid.error?.details).toMatch(/service: /);
    expect(invalid.error?.details).toMatch(/repository: /);
    expect(invalid.error?.details).toMatch(/pyversion: /);
    expect(invalid.bodies).toEqual([]);
    expect((await apiFetch(`${stack.apiUrl}/builds/${id}`)).status).toBe(404);

    const noConfig = await collect(client.Build({ id }));
    expect(noConfig.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(noConfig.error?.details).toMatch(/source: /);

    const badId = await collect(client.Build(seedRequest("../etc/passwd", "v1")));
    expect(badId.error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(badId.error?.details).toMatch(/^id: /);

    // a source host forbidden by its spelling alone: refused before anything is enqueued
    for (const source of ["http://169.254.169.254/latest/meta-data/", "http://2852039166/x.git", "http://[::ffff:169.254.169.254]/x.git"]) {
      const forbiddenId = `grpc-forbidden-${run}-${source.length}`;
      const forbidden = await collect(client.Build(seedRequest(forbiddenId, "v1", { source })));
      expect(forbidden.error?.code, source).toBe(grpc.status.INVALID_ARGUMENT);
      expect(forbidden.error?.details, source).toMatch(/^source: source host .* is not allowed: a cloud metadata address/);
      expect(forbidden.error?.metadata.get("m1l0-error-code"), source).toEqual(["SOURCE_NOT_ALLOWED"]);
      expect((await apiFetch(`${stack.apiUrl}/builds/${forbiddenId}`)).status, source).toBe(404);
    }
  });

  it("answers NOT_FOUND for an unknown id on Find and Push", async () => {
    const client = connect(ImageBuilder);
    await expect(unary(client.Find, client, { id: `no-such-build-${run}` })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    const pushed = await collect(client.Push({ id: `no-such-build-${run}` }));
    expect(pushed.error?.code).toBe(grpc.status.NOT_FOUND);
  });

  it("refuses calls without a valid token (UNAUTHENTICATED) and hides other tokens' builds (NOT_FOUND); health needs none", async () => {
    const id = `grpc-owned-${run}`;
    const owner = connect(ImageBuilder, stack.tokens.alice);
    const started = collect(owner.Build(seedRequest(id, `owned-${run}`)));
    await waitUntil(stack.apiUrl, id, () => true, 30_000);
    for (const [label, client] of [["no token", connect(ImageBuilder, null)], ["a wrong token", connect(ImageBuilder, "m1l0_wrong")]] as const) {
      await expect(unary(client.Find, client, { id }), label).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      const pushed = await collect(client.Push({ id }));
      expect(pushed.error?.code, label).toBe(grpc.status.UNAUTHENTICATED);
      const built = await collect(client.Build(seedRequest(`grpc-unauth-${run}`, "v1")));
      expect(built.error?.code, label).toBe(grpc.status.UNAUTHENTICATED);
    }
    expect((await apiFetch(`${stack.apiUrl}/builds/grpc-unauth-${run}`)).status).toBe(404);
    const other = connect(ImageBuilder, stack.tokens.bob);
    await expect(unary(other.Find, other, { id })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    expect((await collect(other.Build(seedRequest(id, `owned-${run}`)))).error?.code).toBe(grpc.status.ALREADY_EXISTS);
    expect((await getBuild(stack.apiUrl, id)).submitter).toBe("e2e-alice");
    const health = connect(Health, null);
    expect(await unary(health.Check, health, { service: "" })).toEqual({ status: "SERVING" });
    // no need to wait for the image: the owner's stream ends when an admin cancels the build
    const cancel = await apiFetch(`${stack.apiUrl}/builds/${id}`, { method: "DELETE" });
    const ended = await started;
    if (cancel.status === 202) expect(ended.error?.code).toBe(grpc.status.ABORTED);
    else expect(ended.error).toBeUndefined(); // it had already finished
  });

  it("reports SERVING on grpc.health.v1.Health for the server and the service", async () => {
    const client = connect(Health);
    expect(await unary(client.Check, client, { service: "" })).toEqual({ status: "SERVING" });
    expect(await unary(client.Check, client, { service: "m1l0_services.imagebuilder.v1.ImageBuilderService" })).toEqual({ status: "SERVING" });
    await expect(unary(client.Check, client, { service: "no.such.Service" })).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it("lists and describes the service through server reflection", async () => {
    const client = connect(Reflection);
    const call = client.ServerReflectionInfo();
    const responses: ReflectionResponse[] = [];
    function nextResponse() {
      return new Promise<ReflectionResponse>((resolve, reject) => {
        call.once("data", resolve);
        call.once("error", reject);
      });
    }
    call.write({ list_services: "*" });
    responses.push(await nextResponse());
    call.write({ file_containing_symbol: "m1l0_services.imagebuilder.v1.ImageBuilderService" });
    responses.push(await nextResponse());
    call.end();

    const names = responses[0]!.list_services_response!.service.map((service) => service.name);
    expect(names).toContain("m1l0_services.imagebuilder.v1.ImageBuilderService");
    expect(names).toContain("grpc.health.v1.Health");
    const files = responses[1]!.file_descriptor_response!.file_descriptor_proto.map((file) => file.toString("latin1")).join("\n");
    expect(files).toContain("ImageBuilderService");
    expect(files).toContain("BuildRequest");
  });
});

describe("gRPC over TLS (GRPC_TLS_CERT_FILE + GRPC_TLS_KEY_FILE)", () => {
  let tlsStack: RunningStack;
  let certificate: Buffer;

  beforeAll(async () => {
    const certFile = path.join(protoDir, "cert.pem");
    const keyFile = path.join(protoDir, "key.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", keyFile, "-out", certFile], { stdio: "pipe" });
    certificate = readFileSync(certFile);
    tlsStack = await startStack({ apiEnv: { GRPC_TLS_CERT_FILE: certFile, GRPC_TLS_KEY_FILE: keyFile } });
  });

  afterAll(async () => {
    await tlsStack?.stop();
  });

  it("serves TLS clients that trust the certificate and refuses plaintext ones", async () => {
    // the certificate names localhost; dialing the IP, the name to verify is set explicitly
    const secure = new Health(tlsStack.grpcAddress, grpc.credentials.createSsl(certificate), { "grpc.use_local_subchannel_pool": 1, "grpc.ssl_target_name_override": "localhost" });
    const plain = new Health(tlsStack.grpcAddress, grpc.credentials.createInsecure(), { "grpc.use_local_subchannel_pool": 1 });
    clients.push(secure, plain);
    expect(await unary(secure.Check, secure, { service: "" })).toEqual({ status: "SERVING" });
    await expect(unary(plain.Check, plain, { service: "" })).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });
});
