import { createHash } from "node:crypto";
import { BuilderError, isBuilderError, withDeadline } from "@m1l0/config";
import { classifyPushError, type RegistryAuth } from "@m1l0/registry";
import Docker from "dockerode";
import type { Readable } from "node:stream";
import { createBuildCgroup, type BuildCgroup } from "./cgroup.js";

export interface ImageBuildRequest {
  context: Readable;
  /** tag(s) to apply, e.g. the push reference */
  tag: string;
  dockerfile: string;
  networkMode: string;
  /** build args (the egress proxy's HTTP(S)_PROXY: Docker keeps these predefined ones out of the image history) */
  buildArgs?: Record<string, string>;
  memoryBytes?: number;
  cpuQuota?: number;
  labels?: Record<string, string>;
  /** images on this daemon whose layers the build may reuse (the classic builder's cachefrom) */
  cacheFrom?: string[];
  /** the builder's own labels (imageLabels) are already in the Dockerfile: do not add them through the API (one more step) */
  ownLabelsInDockerfile?: boolean;
  signal?: AbortSignal;
  onLine: (line: string) => void;
}

export interface PullRequest {
  reference: string;
  auth?: RegistryAuth;
  signal?: AbortSignal;
}

export interface PushRequest {
  reference: string;
  registry: string;
  auth?: RegistryAuth;
  signal?: AbortSignal;
  onLine: (line: string) => void;
}

/** Port: the image builder. The real one drives a Docker daemon; unit tests use a fake. */
export interface ImageBuilder {
  build(request: ImageBuildRequest): Promise<{ imageId: string }>;
  push(request: PushRequest): Promise<{ digest: string }>;
  ping(): Promise<void>;
  /** labels this builder puts on every image it makes; a generated Dockerfile can carry them itself */
  readonly imageLabels?: Readonly<Record<string, string>>;
  /**
   * Whether the daemon holds this image and how it got it: `built` (by this daemon: its layers
   * are in the local build cache) or `pulled` (its layers are reusable only through cachefrom).
   * Builders without it get no registry cache.
   */
  imageOrigin?(reference: string): Promise<"absent" | "built" | "pulled">;
  /** pulls an image onto the daemon (for cache-from); throws on failure */
  pull?(request: PullRequest): Promise<void>;
  /**
   * What an image on this daemon is made of, independent of where it came from: a hash of its
   * layer diff ids (equal on every daemon that has the same layers). Undefined when absent.
   */
  imageContentId?(reference: string): Promise<string | undefined>;
}

interface ProgressMessage {
  stream?: string;
  status?: string;
  id?: string;
  progress?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string; Digest?: string; Tag?: string };
}

/** The daemon answered with an HTTP error (a statement about the request, not an outage). */
function daemonAnswered(cause: unknown): cause is { statusCode: number; message: string; json?: { message?: string } } {
  return typeof cause === "object" && cause !== null && typeof (cause as { statusCode?: unknown }).statusCode === "number";
}

function daemonMessage(cause: { message: string; json?: { message?: string } }): string {
  return cause.json?.message ?? cause.message.replace(/^\(HTTP code \d+\) [\w ]+ - /, "");
}

function daemonError(cause: unknown, endpoint = "its DOCKER_SOCKET"): BuilderError {
  const message = cause instanceof Error ? cause.message : String(cause);
  return new BuilderError(
    "DAEMON_UNREACHABLE",
    `the worker's Docker daemon (${endpoint}) is unreachable: ${message}; check that dockerd is running on that worker and DOCKER_SOCKET points at it`,
    { cause },
  );
}

/** dockerode passes `abortSignal` on to these calls; its type definitions do not say so */
interface SignalledCalls {
  info(options: { abortSignal: AbortSignal }): Promise<unknown>;
  ping(options: { abortSignal: AbortSignal }): Promise<unknown>;
}

/** Deadline of one short daemon call (ping, info, inspect, list, remove) when the builder is not told otherwise. */
export const DAEMON_CALL_TIMEOUT_MS = 30_000;

/**
 * One short daemon call under a deadline: a daemon that accepts and never answers gives
 * DAEMON_UNREACHABLE, never silence. Streams (build, pull, push) run under the build's own deadline.
 */
export function daemonCall<T>(
  target: { endpoint: string; timeoutMs: number },
  what: string,
  run: (abortSignal: AbortSignal) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const seconds = target.timeoutMs / 1000;
  return withDeadline({ timeoutMs: target.timeoutMs, signal, onTimeout: () => daemonError(new Error(`${what} got no answer within ${seconds} s`), target.endpoint) }, run);
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

export interface DockerImageBuilderOptions {
  socketPath?: string;
  host?: string;
  port?: number;
  /** labels put on every image this builder makes (e.g. the image cache's ownership label) */
  labels?: Record<string, string>;
  /** retries of a push within one call when the registry is unreachable or answers 5xx [0] */
  pushRetries?: number;
  /** first delay between push retries, doubled each time [2000] */
  pushRetryDelayMs?: number;
  /** most processes a build's RUN steps may have at once (0 or unset: no limit) */
  pidsLimit?: number;
  /** cgroup filesystem of the daemon's host, where the per-build pids cgroup is created */
  cgroupRoot?: string;
  /** deadline of one short daemon call [DAEMON_CALL_TIMEOUT_MS] */
  callTimeoutMs?: number;
}

/**
 * Classifies a failed build from the daemon's last error and the step it happened in,
 * so users learn what to fix (a requirement, the Dockerfile, the base image…).
 */
export function classifyBuildError(message: string, currentStep: string, recentLines: string[]): BuilderError {
  // pip and apt print the cause first ("Could not find a version…"), then a summary
  const lastErrorLine = recentLines.find((line) => /^(ERROR|E:|error:)/i.test(line.trim()));
  if (/pull access denied|manifest unknown|repository does not exist|not found: manifest|No such image|failed to resolve reference|dial tcp|no such host/i.test(message) && /^Step \d+\/\d+ : FROM /i.test(currentStep)) {
    const base = currentStep.replace(/^Step \d+\/\d+ : FROM /i, "").trim();
    return new BuilderError("BASE_IMAGE_UNAVAILABLE", `base image ${base} is not available to the build daemon (${message}); ask the operator to make it pullable or pre-load it`);
  }
  if (/dockerfile parse error|unknown instruction|Dockerfile parse|failed to parse|cannot locate specified Dockerfile/i.test(message)) {
    return new BuilderError("DOCKERFILE_ERROR", `Dockerfile error: ${message}`);
  }
  if (/pip install/.test(currentStep) && /returned a non-zero code/.test(message)) {
    return new BuilderError("DEPENDENCY_INSTALL_FAILED", `installing requirements.txt failed${lastErrorLine ? `: ${lastErrorLine.trim()}` : ""} (check the package names and versions in requirements.txt)`);
  }
  if (/COPY failed|ADD failed|no source files were specified/i.test(message)) {
    return new BuilderError("DOCKERFILE_ERROR", `Dockerfile error in "${currentStep}": ${message}`);
  }
  return new BuilderError("BUILD_FAILED", `build failed at "${currentStep || "start"}": ${message}${lastErrorLine ? ` (${lastErrorLine.trim()})` : ""}`);
}

/** A RUN step could not fork because the build's processes hit the pids limit. */
const FORK_REFUSED = /can't fork|cannot fork|fork: retry|fork: Resource temporarily unavailable|Resource temporarily unavailable|pthread_create failed|BlockingIOError|EAGAIN/i;


export class DockerImageBuilder implements ImageBuilder {
  readonly docker: Docker;
  readonly #pidsLimit: number;
  readonly #cgroupRoot: string;
  #cgroupDriverChecked = false;
  /** how the daemon is addressed, for error messages */
  readonly endpoint: string;
  /** where and how long short calls wait (daemonCall) */
  readonly calls: { endpoint: string; timeoutMs: number };

  get imageLabels(): Readonly<Record<string, string>> {
    return this.options.labels ?? {};
  }

  constructor(private readonly options: DockerImageBuilderOptions = {}) {
    this.docker = new Docker(options.host ? { host: options.host, port: options.port ?? 2375 } : { socketPath: options.socketPath ?? "/var/run/docker.sock" });
    this.endpoint = options.host ? `tcp://${options.host}:${options.port ?? 2375}` : `unix://${options.socketPath ?? "/var/run/docker.sock"}`;
    this.#pidsLimit = options.pidsLimit ?? 0;
    this.#cgroupRoot = options.cgroupRoot ?? "/sys/fs/cgroup";
    this.calls = { endpoint: this.endpoint, timeoutMs: options.callTimeoutMs ?? DAEMON_CALL_TIMEOUT_MS };
  }

  /** The per-build cgroup, or undefined when no pids limit is configured. */
  async #createCgroup(): Promise<BuildCgroup | undefined> {
    if (this.#pidsLimit <= 0) return undefined;
    if (!this.#cgroupDriverChecked) {
      const info = (await daemonCall(this.calls, "info", (abortSignal) => (this.docker as unknown as SignalledCalls).info({ abortSignal })).catch((cause: unknown) => {
        throw isBuilderError(cause) ? cause : daemonError(cause, this.endpoint);
      })) as { CgroupDriver?: string };
      if (info.CgroupDriver && info.CgroupDriver !== "cgroupfs") {
        throw new BuilderError("INTERNAL", `BUILD_PIDS_LIMIT needs the daemon's cgroupfs cgroup driver (this daemon uses ${info.CgroupDriver}); set BUILD_PIDS_LIMIT=0 or run dockerd with --exec-opt native.cgroupdriver=cgroupfs`);
      }
      this.#cgroupDriverChecked = true;
    }
    return createBuildCgroup({ root: this.#cgroupRoot, limit: this.#pidsLimit });
  }

  async ping(): Promise<void> {
    try {
      await daemonCall(this.calls, "ping", (abortSignal) => (this.docker as unknown as SignalledCalls).ping({ abortSignal }));
    } catch (cause) {
      throw isBuilderError(cause) ? cause : daemonError(cause, this.endpoint);
    }
  }

  /**
   * A failure that does not name its cause (a cut stream, "context canceled", an empty
   * answer) may mean the daemon itself went away: when it no longer answers, say so, so
   * the attempt is retried (elsewhere, if the daemon stays down) and the user learns why.
   */
  private async explain(failure: BuilderError, signal?: AbortSignal): Promise<BuilderError> {
    if (signal?.aborted || failure.code === "DAEMON_UNREACHABLE") return failure;
    if (failure.code !== "BUILD_FAILED" && failure.code !== "PUSH_FAILED") return failure;
    // a step that failed on its own is the user's; one killed (137/143) may be the daemon stopping its containers
    if (/returned a non-zero code/.test(failure.message) && !/returned a non-zero code: (137|143)\b/.test(failure.message)) return failure;
    for (const wait of [0, 1_000, 1_000, 2_000]) {
      // a daemon that is shutting down still answers for a moment: look again over a few seconds
      await sleep(wait);
      try {
        await this.ping();
      } catch (cause) {
        return isBuilderError(cause) ? cause : daemonError(cause, this.endpoint);
      }
    }
    return failure;
  }

  async imageContentId(reference: string): Promise<string | undefined> {
    let info: Docker.ImageInspectInfo;
    try {
      info = await this.inspect(reference);
    } catch (cause) {
      if (daemonAnswered(cause) && cause.statusCode === 404) return undefined;
      throw isBuilderError(cause) ? cause : daemonError(cause, this.endpoint);
    }
    const layers = info.RootFS?.Layers ?? [];
    return `sha256:${createHash("sha256").update(layers.join("\n")).digest("hex")}`;
  }

  async build(request: ImageBuildRequest): Promise<{ imageId: string }> {
    const cgroup = await this.#createCgroup();
    try {
      return await this.buildOnce(request, cgroup);
    } catch (error) {
      if (cgroup && error instanceof BuilderError && error.code === "BUILD_FAILED" && (await cgroup.limitReached().catch(() => false) || FORK_REFUSED.test(error.message))) {
        throw new BuilderError(
          "PIDS_LIMIT_EXCEEDED",
          `the build reached its limit of ${cgroup.limit} processes (the worker's BUILD_PIDS_LIMIT) and a RUN step could not start more: ${error.message}`,
          { cause: error },
        );
      }
      throw isBuilderError(error) ? await this.explain(error, request.signal) : error;
    } finally {
      await cgroup?.release().catch(() => undefined);
    }
  }

  /**
   * Pushes, retrying within the call while the registry is unreachable or answers 5xx
   * (with doubling delays), so a registry that blips during a push does not cost the
   * whole attempt (fetch and build again).
   */
  async push(request: PushRequest): Promise<{ digest: string }> {
    const retries = this.options.pushRetries ?? 0;
    for (let retry = 0; ; retry++) {
      try {
        return await this.pushOnce(request);
      } catch (error) {
        const failure = isBuilderError(error) ? await this.explain(error, request.signal) : error;
        const transient = isBuilderError(failure) && failure.retryable && failure.code !== "DAEMON_UNREACHABLE";
        if (!transient || retry >= retries || request.signal?.aborted) throw failure;
        const delay = (this.options.pushRetryDelayMs ?? 2_000) * 2 ** retry;
        request.onLine(`push failed (${(failure as BuilderError).message}); retrying in ${(delay / 1000).toFixed(1)} s (${retry + 1}/${retries})`);
        await sleep(delay, request.signal);
        if (request.signal?.aborted) throw failure;
      }
    }
  }

  private async buildOnce(request: ImageBuildRequest, cgroup: BuildCgroup | undefined): Promise<{ imageId: string }> {
    const labels = request.ownLabelsInDockerfile ? { ...request.labels } : { ...this.options.labels, ...request.labels };
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.buildImage(request.context, {
        t: request.tag,
        dockerfile: request.dockerfile,
        networkmode: request.networkMode,
        // the classic builder: BuildKit would ignore a user-defined network (the egress policy's)
        version: "1",
        ...(request.buildArgs && Object.keys(request.buildArgs).length ? { buildargs: request.buildArgs } : {}),
        rm: true,
        forcerm: true,
        ...(request.memoryBytes ? { memory: request.memoryBytes, memswap: request.memoryBytes } : {}),
        ...(request.cpuQuota ? { cpuperiod: 100_000, cpuquota: request.cpuQuota } : {}),
        ...(Object.keys(labels).length ? { labels } : {}),
        ...(cgroup ? { cgroupparent: cgroup.parent } : {}),
        ...(request.cacheFrom && request.cacheFrom.length > 0 ? { cachefrom: JSON.stringify(request.cacheFrom) } : {}),
        ...(request.signal ? { abortSignal: request.signal } : {}),
      });
    } catch (cause) {
      // e.g. a Dockerfile parse error is refused before the build starts
      if (daemonAnswered(cause)) throw classifyBuildError(daemonMessage(cause), "", []);
      throw daemonError(cause, this.endpoint);
    }
    let imageId = "";
    let currentStep = "";
    const recent: string[] = [];
    let failure: BuilderError | undefined;
    await this.follow(stream, (message) => {
      if (message.stream) {
        for (const raw of message.stream.split("\n")) {
          // the classic builder colours a step's stderr with ANSI escapes
          const line = raw.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "").replace(/\r/g, "");
          if (!line.trim()) continue;
          if (/^Step \d+\/\d+ : /.test(line)) {
            currentStep = line;
            recent.length = 0; // classify errors by the failing step's own output
          }
          recent.push(line);
          if (recent.length > 200) recent.shift();
          request.onLine(line);
        }
      }
      if (message.aux?.ID) imageId = message.aux.ID;
      if (message.error || message.errorDetail) {
        const text = message.errorDetail?.message ?? message.error ?? "unknown error";
        request.onLine(`ERROR: ${text}`);
        failure ??= classifyBuildError(text, currentStep, recent);
      }
    });
    if (failure) throw failure;
    if (!imageId) throw new BuilderError("BUILD_FAILED", "the daemon finished the build without reporting an image id");
    return { imageId };
  }

  async imageOrigin(reference: string): Promise<"absent" | "built" | "pulled"> {
    try {
      // the classic builder records each step's image as the next one's Parent; pulled images have none
      const image = await this.inspect(reference);
      return image.Parent ? "built" : "pulled";
    } catch (cause) {
      if (daemonAnswered(cause) && cause.statusCode === 404) return "absent";
      throw isBuilderError(cause) ? cause : daemonError(cause, this.endpoint);
    }
  }

  private inspect(reference: string): Promise<Docker.ImageInspectInfo> {
    return daemonCall(this.calls, `inspect of ${reference}`, (abortSignal) => this.docker.getImage(reference).inspect({ abortSignal } as Docker.ImageInspectOptions));
  }

  async pull(request: PullRequest): Promise<void> {
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.pull(request.reference, {
        ...(request.auth ? { authconfig: request.auth } : {}),
        ...(request.signal ? { abortSignal: request.signal } : {}),
      });
    } catch (cause) {
      if (daemonAnswered(cause)) throw new Error(`pull of ${request.reference} failed: ${daemonMessage(cause)}`, { cause });
      throw daemonError(cause, this.endpoint);
    }
    let failure: string | undefined;
    await this.follow(stream, (message) => {
      if (message.error || message.errorDetail) failure ??= message.errorDetail?.message ?? message.error ?? "unknown error";
    });
    if (failure) throw new Error(`pull of ${request.reference} failed: ${failure}`);
  }

  private async pushOnce(request: PushRequest): Promise<{ digest: string }> {
    const [name, tag] = splitReference(request.reference);
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.getImage(name).push({
        tag,
        ...(request.auth ? { authconfig: request.auth } : {}),
        ...(request.signal ? { abortSignal: request.signal } : {}),
      });
    } catch (cause) {
      if (daemonAnswered(cause)) throw classifyPushError(request.registry, daemonMessage(cause));
      throw daemonError(cause, this.endpoint);
    }
    let digest = "";
    let failure: BuilderError | undefined;
    const lastStatus = new Map<string, string>();
    await this.follow(stream, (message) => {
      if (message.aux?.Digest) digest = message.aux.Digest;
      if (message.error || message.errorDetail) {
        const text = message.errorDetail?.message ?? message.error ?? "unknown error";
        request.onLine(`ERROR: ${text}`);
        failure ??= classifyPushError(request.registry, text);
        return;
      }
      if (message.status) {
        // one line per layer state change, not per progress tick
        const key = message.id ?? "";
        if (lastStatus.get(key) === message.status && message.progress) return;
        lastStatus.set(key, message.status);
        request.onLine(message.id ? `${message.id}: ${message.status}` : message.status);
      }
    });
    if (failure) throw failure;
    if (!digest) throw new BuilderError("PUSH_FAILED", `push of ${request.reference} finished without a manifest digest`);
    return { digest };
  }

  private follow(stream: NodeJS.ReadableStream, onMessage: (message: ProgressMessage) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (error: Error | null) => (error ? reject(daemonError(error, this.endpoint)) : resolve()),
        (message: ProgressMessage) => onMessage(message),
      );
    });
  }
}

/** "host:5000/team/app:tag" → ["host:5000/team/app", "tag"] */
export function splitReference(reference: string): [string, string] {
  const slash = reference.lastIndexOf("/");
  const colon = reference.lastIndexOf(":");
  if (colon > slash) return [reference.slice(0, colon), reference.slice(colon + 1)];
  return [reference, "latest"];
}
