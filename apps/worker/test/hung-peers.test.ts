import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { isBuilderError } from "@m1l0/config";
import { EcrResolver, lookupRemoteImage } from "@m1l0/registry";
import { fetchSource, resolveGitRevision, type SourcePolicy } from "@m1l0/source";
import { createS3Client, getObjectStream, headObjectVersion, putObject } from "@m1l0/storage";
import { settlesWithin, startHungServer, withGcPressure, type HungServer, type Settled } from "@m1l0/testkit";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImageCache } from "../src/cleanup.js";
import { DockerImageBuilder } from "../src/docker.js";

// Every kind of peer a build waits on, hung (accepts, never answers), while a full garbage
// collection runs every 20 ms: each wait must end at its deadline with an error that names the
// peer. On Node 20 a deadline held only inside AbortSignal.any can be collected and never fire
// (nodejs/node#57736); without deadlines of their own, S3, ECR and daemon calls wait for ever.
const DEADLINE_MS = 500;
/** generous: the deadline plus a busy CI machine; a wait that never ends is what this catches */
const WATCHDOG_MS = 15_000;
const policy: SourcePolicy = { allowHttp: true, allowDir: false, hostAllowlist: ["127.0.0.0/8"], cloneTimeoutMs: DEADLINE_MS };

let tcp: HungServer;
let unix: HungServer;
beforeAll(async () => {
  tcp = await startHungServer();
  unix = await startHungServer({ unix: true });
});
afterAll(async () => {
  await tcp?.close();
  await unix?.close();
});

/** A build's own signal (cancel, build deadline) that never fires in these tests: it makes every deadline a composite one. */
const buildSignal = () => new AbortController().signal;

async function underPressure<T>(work: () => Promise<T>): Promise<Settled<T>> {
  return withGcPressure(() => settlesWithin(work(), WATCHDOG_MS));
}

function expectDeadlineError(settled: Settled<unknown>, code: string, mentions: RegExp): void {
  expect(settled.outcome, `still waiting after ${settled.ms} ms`).toBe("rejected");
  if (settled.outcome !== "rejected") return;
  expect(isBuilderError(settled.error) ? settled.error.code : (settled.error as Error).name).toBe(code);
  expect((settled.error as Error).message).toMatch(mentions);
  expect(settled.ms).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
}

describe("a hung registry", () => {
  it("ends the skip-if-unchanged lookup at its deadline", async () => {
    const host = `127.0.0.1:${tcp.port}`;
    const settled = await underPressure(() =>
      lookupRemoteImage({ registry: host, repository: "team/app", tag: "latest" }, { timeoutMs: DEADLINE_MS, signal: buildSignal(), auth: { username: "u", password: "p", serveraddress: host } }),
    );
    expectDeadlineError(settled, "ImageLookupError", new RegExp(`registry ${host} did not answer within 0.5 s`));
  });

  it("ends an ECR token call at its deadline", async () => {
    const ecr = new EcrResolver({ region: "eu-west-1", endpoint: tcp.address, credentials: { accessKeyId: "AKIATEST", secretAccessKey: "test" }, callTimeoutMs: DEADLINE_MS });
    const settled = await underPressure(() => ecr.getToken());
    expectDeadlineError(settled, "REGISTRY_UNREACHABLE", /did not answer within 0.5 s/);
  });
});

describe("a hung git server", () => {
  it("ends the ref advertisement at its deadline", async () => {
    const settled = await underPressure(() =>
      resolveGitRevision({ source: `${tcp.address}/team/app.git#main`, policy, timeoutMs: DEADLINE_MS, signal: buildSignal() }),
    );
    expectDeadlineError(settled, "SOURCE_FETCH_FAILED", /did not list the refs .* within 0.5 s/);
  });

  it("ends a clone at CLONE_TIMEOUT_SECONDS", async () => {
    const workDir = mkdtempSync(path.join(tmpdir(), "m1l0-hung-clone-"));
    try {
      const settled = await underPressure(() => fetchSource({ source: `${tcp.address}/team/app.git#main`, workDir, policy, signal: buildSignal() }));
      expectDeadlineError(settled, "SOURCE_FETCH_FAILED", /timed out after 0.5 s/);
    } finally {
      rmSync(workDir, { recursive: true, force: true });
    }
  });
});

describe("a hung S3", () => {
  const s3 = () =>
    createS3Client({ endpoint: tcp.address, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" }, callTimeoutMs: DEADLINE_MS });

  it("ends a HEAD (an s3 source's identity) at its deadline", async () => {
    const settled = await underPressure(() => headObjectVersion(s3(), "bucket", "ctx.tar.gz", buildSignal()));
    expectDeadlineError(settled, "STORAGE_UNAVAILABLE", /did not answer within 0.5 s/);
  });

  it("ends a GET (an s3 source's download) at its deadline", async () => {
    const settled = await underPressure(() => getObjectStream(s3(), "bucket", "ctx.tar.gz", buildSignal()));
    expectDeadlineError(settled, "STORAGE_UNAVAILABLE", /did not answer within 0.5 s/);
  });

  it("ends an upload (a build's log or record) at its deadline", async () => {
    const settled = await underPressure(() => putObject(s3(), "bucket", "logs/bld_x.log", "a log line\n", "text/plain"));
    expectDeadlineError(settled, "STORAGE_UNAVAILABLE", /did not answer within 0.5 s/);
  });
});

describe("a hung Docker daemon", () => {
  const daemon = () => new DockerImageBuilder({ socketPath: unix.socketPath!, callTimeoutMs: DEADLINE_MS });

  it("ends a ping at its deadline", async () => {
    const settled = await underPressure(() => daemon().ping());
    expectDeadlineError(settled, "DAEMON_UNREACHABLE", /ping got no answer within 0.5 s/);
  });

  it("ends an image inspect (cache-from, build key) at its deadline", async () => {
    const settled = await underPressure(() => daemon().inspect("team/app:latest"));
    expectDeadlineError(settled, "DAEMON_UNREACHABLE", /inspect of team\/app:latest got no answer/);
  });

  it("ends a sandboxed run (the import check) at its deadline", async () => {
    const settled = await underPressure(() => daemon().run({ image: "team/app:latest", command: ["python3", "-c", "pass"], timeoutMs: 60_000 }));
    expectDeadlineError(settled, "DAEMON_UNREACHABLE", /create of a run of team\/app:latest got no answer within 0.5 s/);
  });

  it("ends an image-cache collection at its deadline (it holds this worker's builds back)", async () => {
    const builder = daemon();
    const cache = new ImageCache(builder.docker, { scope: "hung", maxImages: 1, maxBytes: 1, danglingMinAgeSeconds: 1 }, pino({ level: "silent" }), builder.calls);
    const settled = await underPressure(() => cache.collect());
    expectDeadlineError(settled, "DAEMON_UNREACHABLE", /image list got no answer within 0.5 s/);
  });
});

it("the hung peers were really reached", () => {
  expect(tcp.connections).toBeGreaterThan(0);
  expect(unix.connections).toBeGreaterThan(0);
});
