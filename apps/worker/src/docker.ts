import { createHash } from "node:crypto";
import { BuilderError, isBuilderError } from "@m1l0/config";
import { classifyPushError } from "@m1l0/registry";
import Docker from "dockerode";
import type { ImageBuilder, ImageBuildRequest, LocalImage, PullRequest, PushRequest, RunRequest, RunResult } from "./builder.js";
import { runContainer } from "./run-container.js";
import { createBuildCgroup, type BuildCgroup } from "./cgroup.js";
import { LineJoiner, collapseCarriageReturns, stripAnsi } from "./log-lines.js";
import {
  DAEMON_CALL_TIMEOUT_MS,
  FORK_REFUSED,
  classifyBuildError,
  daemonAnswered,
  daemonCall,
  daemonError,
  daemonMessage,
  sleep,
  type ProgressMessage,
  type SignalledCalls,
} from "./daemon.js";

/** A hash of the image's layer diff ids: equal on every daemon that has the same layers. */
function contentIdOf(info: Docker.ImageInspectInfo): string {
  return `sha256:${createHash("sha256").update((info.RootFS?.Layers ?? []).join("\n")).digest("hex")}`;
}

/** The classic builder's step header and the line that closes a step with its image (a short id). */
const STEP_LINE = /^Step (\d+)\/\d+ : /;
const STEP_IMAGE_LINE = /^\s*---> ([0-9a-f]{12,64})\s*$/;

export type { ImageBuilder, ImageBuildRequest, LocalImage, PullRequest, PushRequest, RunRequest, RunResult } from "./builder.js";
export { ForwardingBuilder } from "./builder.js";
export { DAEMON_CALL_TIMEOUT_MS, classifyBuildError, daemonCall } from "./daemon.js";

export interface DockerImageBuilderOptions {
  socketPath?: string;
  host?: string;
  port?: number;
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

export class DockerImageBuilder implements ImageBuilder {
  readonly docker: Docker;
  readonly #pidsLimit: number;
  readonly #cgroupRoot: string;
  #cgroupDriverChecked = false;
  /** how the daemon is addressed, for error messages */
  readonly endpoint: string;
  /** where and how long short calls wait (daemonCall) */
  readonly calls: { endpoint: string; timeoutMs: number };

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

  async inspect(reference: string): Promise<LocalImage | undefined> {
    const info = await this.inspectImage(reference);
    if (!info) return undefined;
    return { origin: (await this.builtHere(info)) ? "built" : "pulled", contentId: contentIdOf(info) };
  }

  async contentId(reference: string): Promise<string | undefined> {
    const info = await this.inspectImage(reference);
    return info ? contentIdOf(info) : undefined;
  }

  private async inspectImage(reference: string): Promise<Docker.ImageInspectInfo | undefined> {
    try {
      return await daemonCall(this.calls, `inspect of ${reference}`, (abortSignal) => this.docker.getImage(reference).inspect({ abortSignal } as Docker.ImageInspectOptions));
    } catch (cause) {
      if (daemonAnswered(cause) && cause.statusCode === 404) return undefined;
      throw isBuilderError(cause) ? cause : daemonError(cause, this.endpoint);
    }
  }

  /**
   * Whether this daemon's build cache can reuse every step of the image: the classic builder
   * records each step's image as the next one's Parent, with the config the step ran with
   * (ContainerConfig), which is what its cache matches. Pulled images have no Parent; steps it
   * restored from a pulled image through cachefrom have a Parent but no such config, so a later
   * build without cachefrom would run them again: those count as pulled too.
   */
  private async builtHere(info: Docker.ImageInspectInfo): Promise<boolean> {
    if (!info.Parent) return false;
    let image: Docker.ImageInspectInfo | undefined = info;
    while (image?.Parent) {
      if (!image.ContainerConfig?.Cmd?.length) return false;
      image = await this.inspectImage(image.Parent);
    }
    return image !== undefined;
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
    const labels = request.labels ?? {};
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
    let stepNumber = 0;
    let stepImage: string | undefined;
    const reportStepImage = () => {
      if (stepImage) request.onStepImage?.(stepNumber, stepImage);
      stepImage = undefined;
    };
    const recent: string[] = [];
    let error: { text: string; step: string } | undefined;
    // the daemon's chunks are not line-aligned: whole lines only, progress bars at their last state
    const output = new LineJoiner((line) => {
      const step = STEP_LINE.exec(line);
      if (step) {
        reportStepImage();
        currentStep = line;
        stepNumber = Number(step[1]);
        recent.length = 0; // classify errors by the failing step's own output
      }
      // the builder's ` ---> <id>` closes a step; a RUN step's own output could print one too,
      // so the step's last one counts, reported when the next step starts (callers verify it)
      const image = STEP_IMAGE_LINE.exec(line);
      if (image && stepNumber > 0) stepImage = image[1];
      recent.push(line);
      if (recent.length > 200) recent.shift();
      request.onLine(line);
    });
    await this.follow(stream, (message) => {
      if (message.stream) output.write(message.stream);
      if (message.aux?.ID) imageId = message.aux.ID;
      if (message.error || message.errorDetail) {
        output.end();
        const text = message.errorDetail?.message ?? message.error ?? "unknown error";
        request.onLine(`ERROR: ${text}`);
        error ??= { text, step: currentStep };
      }
    }).finally(() => output.end());
    // classified once the stream has ended: the RUN container's last output (apt's "E: …") can
    // reach the stream after the daemon's error message
    if (error) throw classifyBuildError(error.text, error.step, recent);
    if (!imageId) throw new BuilderError("BUILD_FAILED", "the daemon finished the build without reporting an image id");
    reportStepImage();
    return { imageId };
  }

  /** A sandboxed run (run-container.ts); the container's own PidsLimit is the build's BUILD_PIDS_LIMIT. */
  run(request: RunRequest): Promise<RunResult> {
    return runContainer(this.docker, { calls: this.calls, pidsLimit: this.#pidsLimit }, request);
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
    // status messages are whole lines; any plain output is joined like a build's
    const output = new LineJoiner((line) => request.onLine(line));
    await this.follow(stream, (message) => {
      if (message.stream) output.write(message.stream);
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
        request.onLine(stripAnsi(collapseCarriageReturns(message.id ? `${message.id}: ${message.status}` : message.status)));
      }
    }).finally(() => output.end());
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
