import type { Redis } from "ioredis";

/** Last pushed images are a cache hint: forgotten after this long without a push. */
const LAST_IMAGE_TTL_SECONDS = 30 * 24 * 3600;

/**
 * The last image pushed to each target repository, shared by every worker through Redis, so a
 * rebuild on another worker/daemon can pull it and reuse its layers (the builder's cache-from).
 * A tag is the revision, so a code change has a new tag: this is the lookup that finds the
 * image to reuse. Keys: `<prefix>last-image:<registry>/<repository>` → reference.
 */
export class LastImageStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = "m1l0:",
  ) {}

  private key(registry: string, repository: string): string {
    return `${this.prefix}last-image:${registry}/${repository}`;
  }

  async get(registry: string, repository: string): Promise<string | undefined> {
    return (await this.redis.get(this.key(registry, repository))) ?? undefined;
  }

  async set(registry: string, repository: string, reference: string): Promise<void> {
    await this.redis.set(this.key(registry, repository), reference, "EX", LAST_IMAGE_TTL_SECONDS);
  }
}
