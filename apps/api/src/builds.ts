import { createHash } from "node:crypto";
import { resolveBaseImage, type Catalog } from "@m1l0/catalog";
import {
  BuilderError,
  canonicalJson,
  newBuildId,
  parseBuildConfig,
  type BuildConfig,
  type BuildRecord,
} from "@m1l0/config";
import { NetworkGuard, parseGitSource, type NetworkPolicy } from "@m1l0/source";
import { BUILD_JOB_NAME, DEFAULT_BUILD_JOB_OPTIONS, cancelBuild, type CancelOutcome, type BuildJobData, type BuildStore } from "@m1l0/queue";
import type { Queue } from "bullmq";

export interface SubmitPolicy {
  allowHttp: boolean;
  allowDir: boolean;
  /** hosts a request may name in `registry`; none when omitted */
  registryAllowlist?: readonly string[];
  /** operator maximum for a request's `timeout` (seconds); unlimited when omitted */
  maxTimeoutSeconds?: number;
  /**
   * The workers' source host policy (SOURCE_HOST_ALLOWLIST, ALLOW_PRIVATE_SOURCE_HOSTS): a git host
   * refused by its spelling alone (an address literal in any notation, localhost, a metadata
   * name) is refused here, before anything is enqueued. Omitted: the strict default (nothing allowlisted).
   */
  sourceHosts?: NetworkPolicy;
}

/**
 * The one way a build enters the system (REST now, gRPC and SDK later): validate every
 * field, check the catalog and source policy, record, enqueue. Nothing is enqueued for
 * a request that fails any check.
 */
export class BuildService {
  private readonly sourceHosts: NetworkGuard;

  constructor(
    private readonly store: BuildStore,
    private readonly queue: Queue<BuildJobData>,
    private readonly catalog: Catalog,
    private readonly policy: SubmitPolicy,
  ) {
    this.sourceHosts = new NetworkGuard(policy.sourceHosts ?? {});
  }

  validate(input: unknown): BuildConfig {
    const config = parseBuildConfig(input);
    const scheme = new URL(config.source).protocol;
    if (scheme === "http:" && !this.policy.allowHttp) {
      throw new BuilderError("SOURCE_NOT_ALLOWED", "source: http sources are disabled on this service; use https", {
        issues: [{ field: "source", message: "http is not allowed here; use https" }],
      });
    }
    if (scheme === "dir:" && !this.policy.allowDir) {
      throw new BuilderError("SOURCE_NOT_ALLOWED", "source: dir:// sources are disabled on this service", {
        issues: [{ field: "source", message: "dir:// sources are not allowed here" }],
      });
    }
    if (scheme === "http:" || scheme === "https:") this.checkSourceHost(config.source);
    if (config.registry && !(this.policy.registryAllowlist ?? []).includes(config.registry.toLowerCase())) {
      throw new BuilderError("VALIDATION_FAILED", `registry: ${config.registry} is not on this service's registry allowlist`, {
        issues: [{ field: "registry", message: "is not on this service's registry allowlist (ask the operator to add it to REGISTRY_ALLOWLIST)" }],
      });
    }
    if (config.timeout !== undefined && this.policy.maxTimeoutSeconds !== undefined && config.timeout > this.policy.maxTimeoutSeconds) {
      const message = `must be at most ${this.policy.maxTimeoutSeconds} seconds on this service`;
      throw new BuilderError("VALIDATION_FAILED", `timeout: ${message}`, { issues: [{ field: "timeout", message }] });
    }
    if (!config.dockerfile) {
      resolveBaseImage(this.catalog, {
        framework: config.framework,
        pyversion: config.pyversion,
        resource: config.resource,
        ...(config.version ? { version: config.version } : {}),
      });
    }
    return config;
  }

  /**
   * The worker checks every address it connects to (DNS can change between here and there);
   * this check needs no DNS: it refuses what the URL's spelling alone gives away.
   */
  private checkSourceHost(source: string): void {
    try {
      this.sourceHosts.checkUrlHost(new URL(parseGitSource(source).url));
    } catch (error) {
      if (!(error instanceof BuilderError)) throw error;
      throw new BuilderError(error.code, `source: ${error.message}`, { issues: [{ field: "source", message: error.message }] });
    }
  }

  /**
   * `idempotencyKey` (REST Idempotency-Key): the build id is derived from the key, so a
   * repeated POST finds the original build through the same create-if-absent that guards
   * client-chosen ids; reusing a key for a different config is a CONFLICT. `submitter` (the
   * token name, recorded on the build) scopes the key: two tokens using one key get two builds.
   *
   * Without an id or key, a request identical to one whose build is still in flight (same
   * config, same submitter) attaches to that build: `attached: true`, nothing enqueued.
   */
  async submit(
    input: unknown,
    options: { id?: string; idempotencyKey?: string; submitter?: string } = {},
  ): Promise<{ record: BuildRecord; created: boolean; attached: boolean }> {
    const config = this.validate(input);
    const id = options.id ?? (options.idempotencyKey !== undefined ? idempotentBuildId(options.idempotencyKey, options.submitter) : newBuildId());
    const now = new Date().toISOString();
    const record: BuildRecord = { id, status: "queued", config, createdAt: now, updatedAt: now, timestamps: { queued: now }, attempts: 0 };
    if (options.submitter !== undefined) record.submitter = options.submitter;
    if (options.id === undefined && options.idempotencyKey === undefined) record.requestKey = requestKey(config, options.submitter);
    let outcome: { id: string; created: boolean; attached: boolean };
    try {
      outcome = await this.store.createOrAttach(record);
    } catch (cause) {
      throw new BuilderError("QUEUE_UNAVAILABLE", "the build queue is unavailable; try again shortly", { cause });
    }
    if (!outcome.created) {
      const existing = await this.store.require(outcome.id);
      if (options.idempotencyKey !== undefined && JSON.stringify(existing.config) !== JSON.stringify(config)) {
        throw new BuilderError("CONFLICT", "this Idempotency-Key was already used for a different build config", {
          issues: [{ field: "Idempotency-Key", message: "was already used for a different build config" }],
        });
      }
      return { record: existing, created: false, attached: outcome.attached };
    }
    try {
      await this.queue.add(BUILD_JOB_NAME, { buildId: id, config }, { ...DEFAULT_BUILD_JOB_OPTIONS, jobId: id });
    } catch (cause) {
      await this.store.discard(id, record.requestKey).catch(() => undefined);
      throw new BuilderError("QUEUE_UNAVAILABLE", "the build queue is unavailable; try again shortly", { cause });
    }
    return { record, created: true, attached: false };
  }

  /** Cancels a queued or running build (see cancelBuild); CONFLICT once it has finished. */
  async cancel(id: string): Promise<{ record: BuildRecord; outcome: CancelOutcome }> {
    try {
      return await cancelBuild(this.store, this.queue, id);
    } catch (cause) {
      if (cause instanceof BuilderError) throw cause;
      throw new BuilderError("QUEUE_UNAVAILABLE", "the build queue is unavailable; try again shortly", { cause });
    }
  }
}

/**
 * A build id derived from an Idempotency-Key (any text up to 255 chars; hashed so it is safe
 * in keys and URLs), scoped by the submitting token's name when there is one.
 */
export function idempotentBuildId(key: string, scope?: string): string {
  if (key.length === 0 || key.length > 255) {
    throw new BuilderError("VALIDATION_FAILED", "Idempotency-Key must be 1 to 255 characters", {
      issues: [{ field: "Idempotency-Key", message: "must be 1 to 255 characters" }],
    });
  }
  const material = scope === undefined ? key : `${scope}\n${key}`;
  return `bld_k${createHash("sha256").update(material).digest("hex").slice(0, 40)}`;
}

/** What makes two requests the same request: the parsed config (canonical JSON) and who sent it. */
export function requestKey(config: BuildConfig, submitter?: string): string {
  return createHash("sha256")
    .update(canonicalJson({ config, submitter: submitter ?? null }))
    .digest("hex");
}

