import {
  CreateRepositoryCommand,
  DescribeRepositoriesCommand,
  ECRClient,
  GetAuthorizationTokenCommand,
  TagResourceCommand,
  type ECRClientConfig,
  type ImageTagMutability,
} from "@aws-sdk/client-ecr";
import { BuilderError, deadlineMiddleware, type BuildConfig, type BuildTag } from "@m1l0/config";
import type { PushTarget, RegistryAuth, RegistryResolver } from "./types.js";

export interface EcrOptions {
  region: string;
  /** ECR API endpoint override (VPC endpoints; tests point it at a stand-in) */
  endpoint?: string;
  /** omitted = the AWS default credential chain (env, profile, container/instance role) */
  credentials?: ECRClientConfig["credentials"];
  /** a token is refreshed this long before its expiresAt [5 minutes] */
  tokenRefreshMarginMs?: number;
  /** for repositories this worker creates [MUTABLE] */
  imageTagMutability?: ImageTagMutability;
  /** for repositories this worker creates [false] */
  scanOnPush?: boolean;
  /** deadline of one ECR API call, retries included [30 000 ms] */
  callTimeoutMs?: number;
  /** a client to use instead of one built from the options above */
  client?: ECRClient;
  now?: () => number;
}

interface CachedToken {
  /** settles once per GetAuthorizationToken call; concurrent builds share it */
  promise: Promise<EcrToken>;
  /** epoch ms after which a new token is fetched; Infinity while the call is in flight */
  refreshAfter: number;
}

export interface EcrToken {
  /** registry host from the token's proxyEndpoint, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com */
  registry: string;
  auth: RegistryAuth;
  expiresAt: number;
}

const AUTH_ERROR_NAMES = new Set([
  "UnrecognizedClientException",
  "InvalidSignatureException",
  "AccessDeniedException",
  "ExpiredTokenException",
  "InvalidClientTokenId",
  "MissingAuthenticationTokenException",
  "UnauthorizedException",
  "CredentialsProviderError",
]);
const INVALID_REQUEST_NAMES = new Set(["InvalidParameterException", "InvalidTagParameterException", "TooManyTagsException", "ValidationException"]);

/** Maps an ECR API failure to a BuilderError; never includes credentials (the SDK's messages hold none). */
export function classifyEcrError(cause: unknown, registry: string, action: string): BuilderError {
  const error = cause as { name?: string; message?: string; $metadata?: { httpStatusCode?: number }; $retryable?: unknown; code?: string };
  const name = error?.name ?? "";
  const status = error?.$metadata?.httpStatusCode;
  const detail = `${name ? `${name}: ` : ""}${error?.message ?? String(cause)}`;
  if (AUTH_ERROR_NAMES.has(name) || status === 401 || status === 403) {
    return new BuilderError("REGISTRY_AUTH_FAILED", `registry authentication failed for ${registry}: ${action} was refused (${detail}); check the worker's AWS credentials and IAM permissions`, {
      cause,
      retryable: false,
    });
  }
  if (INVALID_REQUEST_NAMES.has(name)) {
    return new BuilderError("VALIDATION_FAILED", `ECR rejected ${action}: ${detail}`, { cause, retryable: false });
  }
  if (name === "ThrottlingException" || error?.$retryable || (status !== undefined && status >= 500) || status === undefined) {
    // no status at all: the endpoint did not answer (DNS, refused, timeout)
    return new BuilderError("REGISTRY_UNREACHABLE", `ECR (${registry}) is unavailable for ${action}: ${detail}`, { cause, retryable: true });
  }
  return new BuilderError("PUSH_FAILED", `ECR ${action} failed: ${detail}`, { cause });
}

/** "https://123.dkr.ecr.eu-west-1.amazonaws.com" → "123.dkr.ecr.eu-west-1.amazonaws.com" */
export function registryHostFromProxyEndpoint(proxyEndpoint: string): string {
  try {
    return new URL(proxyEndpoint).host;
  } catch {
    return proxyEndpoint.replace(/^[a-z]+:\/\//i, "").replace(/\/.*$/, "");
  }
}

/** An ECR authorization token is base64("AWS:<password>"). */
export function decodeAuthorizationToken(token: string, serveraddress: string): RegistryAuth {
  const decoded = Buffer.from(token, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon <= 0) throw new BuilderError("REGISTRY_AUTH_FAILED", `registry authentication failed for ${serveraddress}: ECR returned a malformed authorization token`);
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1), serveraddress };
}

const toAwsTags = (tags: BuildTag[]) => tags.map((tag) => ({ Key: tag.Key, Value: tag.Value }));

/** ECR's API under deadlines (one per call with its retries, plus socket timeouts), so a hung endpoint never holds a build. */
function createEcrClient(options: EcrOptions): ECRClient {
  const callTimeoutMs = options.callTimeoutMs ?? 30_000;
  const client = new ECRClient({
    region: options.region,
    ...(options.endpoint ? { endpoint: options.endpoint } : {}),
    ...(options.credentials ? { credentials: options.credentials } : {}),
    requestHandler: { connectionTimeout: 5_000, requestTimeout: Math.min(callTimeoutMs, 30_000), throwOnRequestTimeout: true },
  });
  const where = `ECR (${options.region}${options.endpoint ? `, ${options.endpoint}` : ""})`;
  client.middlewareStack.add(
    deadlineMiddleware(callTimeoutMs, (ms) => new BuilderError("REGISTRY_UNREACHABLE", `${where} did not answer within ${ms / 1000} s`)),
    { step: "initialize", name: "m1l0CallDeadline" },
  );
  return client;
}

/**
 * `service: ecr` — pushes to the worker's AWS account's registry. One instance per worker:
 * its token cache is shared by every build the worker runs at once.
 */
export class EcrResolver implements RegistryResolver {
  readonly client: ECRClient;
  private token: CachedToken | undefined;
  private readonly marginMs: number;
  private readonly now: () => number;

  constructor(private readonly options: EcrOptions) {
    this.client = options.client ?? createEcrClient(options);
    this.marginMs = options.tokenRefreshMarginMs ?? 5 * 60_000;
    this.now = options.now ?? Date.now;
  }

  /** How users see this registry before a token told us the account: for error messages. */
  private get displayName(): string {
    return `ECR (${this.options.region})`;
  }

  /** A valid token, fetching a new one only when none is cached or it nears expiry (single-flight). */
  getToken(): Promise<EcrToken> {
    const cached = this.token;
    if (cached && this.now() < cached.refreshAfter) return cached.promise;
    const entry: CachedToken = { promise: this.fetchToken(), refreshAfter: Number.POSITIVE_INFINITY };
    this.token = entry;
    entry.promise.then(
      (token) => {
        entry.refreshAfter = token.expiresAt - this.marginMs;
      },
      () => {
        // a failed call is not cached: the next build asks again
        if (this.token === entry) this.token = undefined;
      },
    );
    return entry.promise;
  }

  private async fetchToken(): Promise<EcrToken> {
    let response;
    try {
      response = await this.client.send(new GetAuthorizationTokenCommand({}));
    } catch (cause) {
      throw classifyEcrError(cause, this.displayName, "GetAuthorizationToken");
    }
    const data = response.authorizationData?.[0];
    if (!data?.authorizationToken || !data.proxyEndpoint) {
      throw new BuilderError("REGISTRY_AUTH_FAILED", `registry authentication failed for ${this.displayName}: GetAuthorizationToken returned no token`);
    }
    const registry = registryHostFromProxyEndpoint(data.proxyEndpoint);
    return {
      registry,
      auth: decodeAuthorizationToken(data.authorizationToken, data.proxyEndpoint),
      // without an expiry, assume ECR's documented 12 hours
      expiresAt: data.expiresAt ? data.expiresAt.getTime() : this.now() + 12 * 3600_000,
    };
  }

  /**
   * Makes sure the repository exists and carries the request's tags. Safe to run from many
   * workers at once: losing a CreateRepository race just means tagging the winner's repository.
   */
  async ensureRepository(repositoryName: string, tags: BuildTag[], registry: string): Promise<{ created: boolean }> {
    const arn = await this.describeRepositoryArn(repositoryName, registry);
    if (arn) {
      await this.tagRepository(arn, tags, registry);
      return { created: false };
    }
    try {
      await this.client.send(
        new CreateRepositoryCommand({
          repositoryName,
          imageTagMutability: this.options.imageTagMutability ?? "MUTABLE",
          imageScanningConfiguration: { scanOnPush: this.options.scanOnPush ?? false },
          ...(tags.length ? { tags: toAwsTags(tags) } : {}),
        }),
      );
      return { created: true };
    } catch (cause) {
      if ((cause as { name?: string }).name !== "RepositoryAlreadyExistsException") throw classifyEcrError(cause, registry, `CreateRepository ${repositoryName}`);
    }
    // another worker created it between our Describe and Create
    const winner = await this.describeRepositoryArn(repositoryName, registry);
    if (winner) await this.tagRepository(winner, tags, registry);
    return { created: false };
  }

  private async describeRepositoryArn(repositoryName: string, registry: string): Promise<string | undefined> {
    try {
      const response = await this.client.send(new DescribeRepositoriesCommand({ repositoryNames: [repositoryName] }));
      return response.repositories?.[0]?.repositoryArn;
    } catch (cause) {
      if ((cause as { name?: string }).name === "RepositoryNotFoundException") return undefined;
      throw classifyEcrError(cause, registry, `DescribeRepositories ${repositoryName}`);
    }
  }

  private async tagRepository(resourceArn: string, tags: BuildTag[], registry: string): Promise<void> {
    if (tags.length === 0) return;
    try {
      await this.client.send(new TagResourceCommand({ resourceArn, tags: toAwsTags(tags) }));
    } catch (cause) {
      throw classifyEcrError(cause, registry, `TagResource ${resourceArn}`);
    }
  }

  async resolve(config: BuildConfig): Promise<PushTarget> {
    const token = await this.getToken();
    await this.ensureRepository(config.repository, config.tags, token.registry);
    return {
      registry: token.registry,
      repository: config.repository,
      tag: config.revision,
      reference: `${token.registry}/${config.repository}:${config.revision}`,
      // the token is cached and renewed before it expires (tokenRefreshMarginMs)
      auth: async () => (await this.getToken()).auth,
    };
  }
}
