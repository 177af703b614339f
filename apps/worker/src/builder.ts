import type { RegistryAuth } from "@m1l0/registry";
import type { Readable } from "node:stream";

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
  /** every label the build API adds to the image (the pipeline decides them all; a builder adds none of its own) */
  labels?: Record<string, string>;
  /** images on this daemon whose layers the build may reuse (the classic builder's cachefrom) */
  cacheFrom?: string[];
  signal?: AbortSignal;
  onLine: (line: string) => void;
  /**
   * Told each step's image as the builder commits it (steps numbered from 1, FROM's being its
   * base image), so work on an intermediate image can start before the build ends. A builder
   * that cannot tell leaves it uncalled: callers fall back to the finished image.
   */
  onStepImage?: (step: number, imageId: string) => void;
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

/**
 * One short, sandboxed run of a program in an image (the import check). The builder always
 * runs it with no network, a read-only root filesystem (a small /tmp), no capabilities and the
 * build's memory, CPU and process limits, and removes the container whatever happens.
 */
export interface RunRequest {
  /** an image this daemon holds */
  image: string;
  /** the program and its arguments: replaces the image's entrypoint and command */
  command: string[];
  env?: Record<string, string>;
  /** the run is killed after this long (the result says `timedOut`) */
  timeoutMs: number;
  memoryBytes?: number;
  cpuQuota?: number;
  signal?: AbortSignal;
}

export interface RunResult {
  /** the program's exit status; 127 when the program is not in the image */
  exitCode: number;
  /** each capped at RUN_OUTPUT_MAX_BYTES */
  stdout: string;
  stderr: string;
  /** the deadline fired and the container was killed */
  timedOut: boolean;
}

/** The most output of one stream a run returns (the rest is dropped). */
export const RUN_OUTPUT_MAX_BYTES = 1024 * 1024;

/** What the builder's daemon knows about an image it holds. */
export interface LocalImage {
  /**
   * `built` (by this daemon: its layers are in the local build cache) or `pulled` (its
   * layers are reusable only through cachefrom)
   */
  origin: "built" | "pulled";
  /** a hash of the image's layer diff ids: equal on every daemon that has the same layers */
  contentId: string;
}

/**
 * Port: the image builder. The real one drives a Docker daemon (DockerImageBuilder); unit
 * tests use a fake (test/support/fake-builder.ts); one conformance suite runs both. Every
 * method is required, so a wrapper cannot silently switch a feature off by not forwarding it:
 * wrappers extend ForwardingBuilder and override only what they change.
 */
export interface ImageBuilder {
  /** resolves when the daemon answers; DAEMON_UNREACHABLE otherwise */
  ping(): Promise<void>;
  build(request: ImageBuildRequest): Promise<{ imageId: string }>;
  /** pushes a tag this daemon holds; resolves with the manifest digest */
  push(request: PushRequest): Promise<{ digest: string }>;
  /** pulls an image onto the daemon (for cache-from); throws on failure */
  pull(request: PullRequest): Promise<void>;
  /** the image this daemon holds under `reference`, or undefined when it holds none */
  inspect(reference: string): Promise<LocalImage | undefined>;
  /** LocalImage.contentId alone, without working out the origin (one daemon call); undefined when it holds no such image */
  contentId(reference: string): Promise<string | undefined>;
  /** runs a program once in an image it holds, sandboxed (RunRequest); rejects when the image is not here or the daemon fails */
  run(request: RunRequest): Promise<RunResult>;
}

/** Passes every call on to `inner`; a decorator extends it and overrides only what it changes. */
export class ForwardingBuilder implements ImageBuilder {
  constructor(protected readonly inner: ImageBuilder) {}

  ping(): Promise<void> {
    return this.inner.ping();
  }

  build(request: ImageBuildRequest): Promise<{ imageId: string }> {
    return this.inner.build(request);
  }

  push(request: PushRequest): Promise<{ digest: string }> {
    return this.inner.push(request);
  }

  pull(request: PullRequest): Promise<void> {
    return this.inner.pull(request);
  }

  inspect(reference: string): Promise<LocalImage | undefined> {
    return this.inner.inspect(reference);
  }

  contentId(reference: string): Promise<string | undefined> {
    return this.inner.contentId(reference);
  }

  run(request: RunRequest): Promise<RunResult> {
    return this.inner.run(request);
  }
}
