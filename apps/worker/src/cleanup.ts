import { isTerminal, type BuildRecord } from "@m1l0/config";
import type Docker from "dockerode";
import { readdir, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { Logger } from "pino";
import { ForwardingBuilder, type ImageBuilder, type ImageBuildRequest, type PullRequest, type PushRequest } from "./builder.js";
import { DAEMON_CALL_TIMEOUT_MS, daemonCall } from "./daemon.js";

/**
 * What a worker leaves on its host, kept bounded:
 * - images: every image the worker builds carries IMAGE_CACHE_LABEL=<scope>; the image
 *   cache keeps at most N of them and M bytes, dropping the least recently built first
 *   (removing an image's tags also removes its untagged build layers); base images carry
 *   no such label and are never touched; dangling images (a failed build's last layer, an
 *   image whose tag moved on) are removed once seen dangling for a minimum age (a running
 *   build's newest layer is dangling for a moment between steps).
 * - temp dirs: a worker killed mid-build leaves `m1l0-<buildId>-*` dirs and context spools
 *   in WORK_DIR; the next start removes those whose build is not running anywhere.
 * Containers need no sweep: builds run with forcerm, so the daemon removes a build's
 * intermediate containers on success, failure and abort (client gone) alike.
 */
export const IMAGE_CACHE_LABEL = "ai.m1l0.image-cache";

/** Labels the builder puts on every image it makes for the cache of `scope`. */
export function imageCacheLabels(scope: string): Record<string, string> {
  return { [IMAGE_CACHE_LABEL]: scope };
}

export interface ImageCacheOptions {
  scope: string;
  maxImages: number;
  maxBytes: number;
  /** remove dangling images once seen dangling this long; 0 = never */
  danglingMinAgeSeconds: number;
}

export interface CollectResult {
  kept: number;
  keptBytes: number;
  removed: string[];
  prunedDangling: number;
}

export class ImageCache {
  /** image id → when this process last built (or rebuilt from cache) it */
  private readonly lastBuilt = new Map<string, number>();
  /** image id → builds between their build and the end of their push */
  private readonly inUse = new Map<string, number>();
  /** docker builds of this worker in progress, and a removal pass waiting for them to end */
  private builds = 0;
  private readonly idle: Array<() => void> = [];
  private removing: Promise<unknown> | undefined;
  /** dangling image id → when this worker first saw it dangling */
  private readonly danglingSince = new Map<string, number>();
  private running: Promise<CollectResult> | undefined;
  private rerun = false;
  /**
   * Whether this worker may have changed the daemon's images since the last collection began:
   * a build, pull or push (the only ways it adds images or leaves one dangling). Listing
   * images costs the daemon tens to hundreds of ms of CPU on a host with a thousand images, so
   * a build that never reached the daemon (a bad source, a cached answer) must not cost that.
   */
  private changed = true;

  constructor(
    private readonly docker: Docker,
    readonly options: ImageCacheOptions,
    private readonly logger: Logger,
    /** the daemon's address (for errors) and the deadline of each list or remove call */
    private readonly calls: { endpoint: string; timeoutMs: number } = { endpoint: "the worker's daemon", timeoutMs: DAEMON_CALL_TIMEOUT_MS },
  ) {}

  /** A hung daemon must not hold a collection (and with it, through `exclusively`, this worker's builds). */
  private listImages(filters: Record<string, string[]>): Promise<Docker.ImageInfo[]> {
    return daemonCall(this.calls, "image list", (abortSignal) => this.docker.listImages({ filters: JSON.stringify(filters), abortSignal } as Docker.ListImagesOptions));
  }

  private removeImage(reference: string): Promise<unknown> {
    return daemonCall(this.calls, `removal of ${reference}`, (abortSignal) => this.docker.getImage(reference).remove({ abortSignal }));
  }

  markBuilt(imageId: string): void {
    this.lastBuilt.delete(imageId);
    this.lastBuilt.set(imageId, Date.now());
    // bounded: forget the oldest entries (they fall back to the image's creation time)
    if (this.lastBuilt.size > 10_000) this.lastBuilt.delete(this.lastBuilt.keys().next().value!);
  }

  acquire(imageId: string): void {
    this.inUse.set(imageId, (this.inUse.get(imageId) ?? 0) + 1);
  }

  release(imageId: string): void {
    const count = (this.inUse.get(imageId) ?? 0) - 1;
    if (count > 0) this.inUse.set(imageId, count);
    else this.inUse.delete(imageId);
  }

  /**
   * Docker's classic builder walks a parent image's children when it looks for a cached
   * step; an image removed during that walk fails the build ("unable to find image").
   * So removals and this worker's builds exclude each other: a removal pass waits for the
   * running builds to end and holds new ones back until it is done (a few hundred ms).
   */
  async enterBuild(): Promise<void> {
    while (this.removing) await this.removing.catch(() => undefined);
    this.builds++;
  }

  leaveBuild(): void {
    this.builds--;
    if (this.builds === 0) for (const resolve of this.idle.splice(0)) resolve();
  }

  private async exclusively<T>(work: () => Promise<T>): Promise<T> {
    const pass = (async () => {
      if (this.builds > 0) await new Promise<void>((resolve) => this.idle.push(resolve));
      return work();
    })();
    this.removing = pass;
    try {
      return await pass;
    } finally {
      this.removing = undefined;
    }
  }

  /** Notes a build, pull or push on the daemon: the next collectIfChanged runs. */
  noteChange(): void {
    this.changed = true;
  }

  /**
   * After a job: collects when this worker changed the daemon's images since the last
   * collection, or when a dangling image it is ageing is now old enough to go; else nothing
   * to do (undefined), and the daemon is not asked.
   */
  collectIfChanged(): Promise<CollectResult> | undefined {
    return this.changed || this.danglingDue(Date.now()) ? this.collect() : undefined;
  }

  private danglingDue(now: number): boolean {
    if (this.options.danglingMinAgeSeconds <= 0) return false;
    for (const since of this.danglingSince.values()) if (this.oldEnough(since, now)) return true;
    return false;
  }

  /** A dangling image first seen at `since` has been dangling for the minimum age. */
  private oldEnough(since: number, now: number): boolean {
    return now - since >= this.options.danglingMinAgeSeconds * 1000;
  }

  /** Runs one collection; calls during a run coalesce into one more run after it. */
  collect(): Promise<CollectResult> {
    if (this.running) {
      this.rerun = true;
      return this.running;
    }
    const run = this.collectOnce().finally(() => {
      this.running = undefined;
      if (this.rerun) {
        this.rerun = false;
        void this.collect().catch((error: Error) => this.logger.warn({ err: error }, "image cache collection failed"));
      }
    });
    this.running = run;
    return run;
  }

  private async collectOnce(): Promise<CollectResult> {
    // cleared before listing: a change during this run makes the next call collect again
    this.changed = false;
    const images = await this.listImages({ label: [`${IMAGE_CACHE_LABEL}=${this.options.scope}`] });
    const recency = (image: Docker.ImageInfo) => Math.max(image.Created * 1000, this.lastBuilt.get(image.Id) ?? 0);
    images.sort((a, b) => recency(b) - recency(a));
    let kept = 0;
    let keptBytes = 0;
    const victims: Docker.ImageInfo[] = [];
    for (const image of images) {
      const fits = kept < this.options.maxImages && keptBytes + image.Size <= this.options.maxBytes;
      if (fits || this.inUse.has(image.Id)) {
        kept++;
        keptBytes += image.Size;
      } else victims.push(image);
    }
    const removed: string[] = [];
    if (victims.length) {
      await this.exclusively(async () => {
        for (const image of victims) if (!this.inUse.has(image.Id) && (await this.remove(image))) removed.push(image.Id);
      });
    }
    const prunedDangling = await this.collectDangling();
    if (removed.length || prunedDangling) this.logger.info({ kept, keptBytes, removed: removed.length, prunedDangling }, "image cache collected");
    return { kept, keptBytes, removed, prunedDangling };
  }

  /**
   * Dangling (untagged, childless) images: a failed build's last layer, an image whose tag
   * moved on. A running classic build's newest layer is dangling too, for the moment
   * between its commit and the next step, so an image is removed only once this worker has
   * seen it dangling for the minimum age (and never while a container uses it).
   */
  private async collectDangling(): Promise<number> {
    if (this.options.danglingMinAgeSeconds <= 0) return 0;
    const dangling = await this.listImages({ dangling: ["true"] });
    const now = Date.now();
    const current = new Set(dangling.map((image) => image.Id));
    for (const id of [...this.danglingSince.keys()]) if (!current.has(id)) this.danglingSince.delete(id);
    const due: string[] = [];
    for (const image of dangling) {
      const since = this.danglingSince.get(image.Id) ?? now;
      this.danglingSince.set(image.Id, since);
      if (this.oldEnough(since, now)) due.push(image.Id);
    }
    if (due.length === 0) return 0;
    return this.exclusively(async () => {
      let removed = 0;
      for (const id of due) {
        try {
          await this.removeImage(id);
          this.danglingSince.delete(id);
          removed++;
        } catch (error) {
          this.logger.debug({ err: error, image: id }, "dangling image not removed");
        }
      }
      return removed;
    });
  }

  /** Removes an image through its tags (the last one takes the image and its untagged parents). */
  private async remove(image: Docker.ImageInfo): Promise<boolean> {
    const tags = (image.RepoTags ?? []).filter((tag) => tag !== "<none>:<none>");
    try {
      if (tags.length === 0) await this.removeImage(image.Id);
      for (const tag of tags) await this.removeImage(tag);
      this.lastBuilt.delete(image.Id);
      return true;
    } catch (error) {
      // e.g. a container still uses it, or another worker removed it first
      this.logger.debug({ err: error, image: image.Id }, "image not removed");
      return false;
    }
  }
}

/**
 * The image builder port, reporting to the cache: built images are marked recent and held
 * until their push ends, so a collection never takes an image a build still needs; builds,
 * pulls and pushes are noted as changes (the next collection after a job runs). Ping,
 * inspect, contentId and run are forwarded as they are.
 */
export class ImageCachingBuilder extends ForwardingBuilder {
  /** tag → image id awaiting its push */
  private readonly pending = new Map<string, string>();

  constructor(
    inner: ImageBuilder,
    private readonly cache: ImageCache,
  ) {
    super(inner);
  }

  override async build(request: ImageBuildRequest): Promise<{ imageId: string }> {
    await this.cache.enterBuild();
    let result: { imageId: string };
    try {
      result = await this.inner.build(request);
    } finally {
      // a failed build leaves its last layer dangling: collect either way
      this.cache.noteChange();
      this.cache.leaveBuild();
    }
    this.cache.markBuilt(result.imageId);
    const previous = this.pending.get(request.tag);
    if (previous) this.cache.release(previous);
    this.pending.set(request.tag, result.imageId);
    this.cache.acquire(result.imageId);
    return result;
  }

  override async pull(request: PullRequest): Promise<void> {
    try {
      await this.inner.pull(request);
    } finally {
      // a pulled image may carry this cache's label, and the tag it moves leaves the old image dangling
      this.cache.noteChange();
    }
  }

  override async push(request: PushRequest): Promise<{ digest: string }> {
    try {
      return await this.inner.push(request);
    } finally {
      this.cache.noteChange();
      const imageId = this.pending.get(request.reference);
      if (imageId) {
        this.pending.delete(request.reference);
        this.cache.release(imageId);
      }
    }
  }
}

export function withImageCache(builder: ImageBuilder, cache: ImageCache): ImageBuilder {
  return new ImageCachingBuilder(builder, cache);
}

/** Work-dir entries a build leaves: its fetch dir (mkdtemp `m1l0-<id>-XXXXXX`) and its context spool. */
export function buildIdOfWorkEntry(name: string): string | undefined {
  const spool = /^m1l0-context-(.+)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.tar\.gz$/.exec(name);
  if (spool) return spool[1];
  return /^m1l0-(.+)-[A-Za-z0-9]{6}$/.exec(name)?.[1];
}

export interface SweepOptions {
  workDir: string;
  /** the build's record in this deployment's store (undefined: unknown here) */
  getRecord(buildId: string): Promise<BuildRecord | undefined>;
  /** true while some worker holds the build's job (an unexpired lock) */
  isHeld(buildId: string): Promise<boolean>;
  /** true while the build still has uploads to finish (its spools are what a sweeper uploads) */
  hasPendingUploads(buildId: string): Promise<boolean>;
  /** ids running in this process right now (never swept) */
  runningHere?: () => Iterable<string>;
  logger: Logger;
}

/**
 * Removes what crashed builds left in WORK_DIR: entries of builds that finished, or whose
 * job no worker holds any more. Entries of builds this deployment does not know (another
 * stack sharing the dir, other programs' `m1l0-*` temp dirs) are left alone.
 */
export async function sweepWorkDir(options: SweepOptions): Promise<string[]> {
  const names = await readdir(options.workDir).catch(() => [] as string[]);
  const here = new Set(options.runningHere?.() ?? []);
  const removed: string[] = [];
  for (const name of names) {
    const buildId = buildIdOfWorkEntry(name);
    if (!buildId || here.has(buildId)) continue;
    const record = await options.getRecord(buildId);
    if (!record) continue;
    if (!isTerminal(record.status) && (await options.isHeld(buildId))) continue;
    if (await options.hasPendingUploads(buildId)) continue;
    const entry = path.join(options.workDir, name);
    const isDir = (await stat(entry).catch(() => undefined))?.isDirectory();
    if (isDir === undefined || (!isDir && !name.startsWith("m1l0-context-"))) continue;
    await rm(entry, { recursive: true, force: true });
    removed.push(name);
  }
  if (removed.length) options.logger.info({ removed }, "removed work dirs left by crashed builds");
  return removed;
}
