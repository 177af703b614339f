/**
 * TEST STAND-IN for AWS ECR's control plane. Not part of the product, never used in production.
 *
 * AWS's ECR API cannot be reached from the test machines, so this small node:http server
 * speaks the subset of ECR's AWS JSON 1.1 protocol the product uses (GetAuthorizationToken,
 * DescribeRepositories, CreateRepository, TagResource, ListTagsForResource). The product
 * talks to it through the real @aws-sdk/client-ecr with only the endpoint overridden. The
 * tokens it issues are the local registry's htpasswd credentials and its proxyEndpoint is
 * that registry, so the data plane (docker push/pull) is the real registry.
 *
 * Simplifications: one account, one region; the SigV4 signature is not verified, only the
 * access key id it names (unknown ids get UnrecognizedClientException, like AWS).
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export const ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921.";

export interface EcrStandInOptions {
  /** where issued tokens point: the real registry's URL */
  proxyEndpoint: string;
  username: string;
  password: string;
  /** access key ids this stand-in accepts */
  acceptedAccessKeyIds: string[];
  /** lifetime of issued tokens [12 h, as ECR] */
  tokenTtlMs?: number;
  region?: string;
  accountId?: string;
}

export interface StandInRepository {
  arn: string;
  name: string;
  createdAt: number;
  imageTagMutability: string;
  scanOnPush: boolean;
  tags: Map<string, string>;
}

export interface EcrStandIn {
  endpoint: string;
  /** number of requests per operation, e.g. calls.GetAuthorizationToken */
  calls: Record<string, number>;
  /** outcome of every CreateRepository call, in order */
  createOutcomes: Array<"created" | "already-exists">;
  repositories: Map<string, StandInRepository>;
  /** every authorization token handed out (base64), for secret scans */
  issuedTokens: string[];
  /** changes the lifetime of tokens issued from now on */
  setTokenTtl(ms: number): void;
  /**
   * Holds the next `count` DescribeRepositories answers until all have arrived, so that
   * concurrent callers all see the repository missing: a forced create race.
   */
  holdDescribes(count: number): void;
  resetCounts(): void;
  close(): Promise<void>;
}

class AwsError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

export async function startEcrStandIn(options: EcrStandInOptions): Promise<EcrStandIn> {
  const region = options.region ?? "us-east-1";
  const accountId = options.accountId ?? "123456789012";
  let tokenTtlMs = options.tokenTtlMs ?? 12 * 3600_000;
  const calls: Record<string, number> = {};
  const createOutcomes: EcrStandIn["createOutcomes"] = [];
  const repositories = new Map<string, StandInRepository>();
  const issuedTokens: string[] = [];
  let describeBarrier: { remaining: number; waiting: Array<() => void> } | undefined;
  const registryHost = new URL(options.proxyEndpoint).host;

  const describeRepository = (repo: StandInRepository) => ({
    repositoryArn: repo.arn,
    registryId: accountId,
    repositoryName: repo.name,
    repositoryUri: `${registryHost}/${repo.name}`,
    createdAt: repo.createdAt / 1000,
    imageTagMutability: repo.imageTagMutability,
    imageScanningConfiguration: { scanOnPush: repo.scanOnPush },
  });
  const repositoryByArn = (arn: unknown): StandInRepository => {
    for (const repo of repositories.values()) if (repo.arn === arn) return repo;
    throw new AwsError("RepositoryNotFoundException", `The repository with ARN '${String(arn)}' does not exist in the registry with id '${accountId}'`);
  };
  const applyTags = (repo: StandInRepository, tags: unknown) => {
    for (const tag of (tags as Array<{ Key: string; Value: string }> | undefined) ?? []) repo.tags.set(tag.Key, tag.Value);
  };

  const operations: Record<string, (input: Record<string, unknown>) => Promise<unknown> | unknown> = {
    GetAuthorizationToken: () => {
      const token = Buffer.from(`${options.username}:${options.password}`).toString("base64");
      issuedTokens.push(token);
      return { authorizationData: [{ authorizationToken: token, expiresAt: (Date.now() + tokenTtlMs) / 1000, proxyEndpoint: options.proxyEndpoint }] };
    },
    DescribeRepositories: async (input) => {
      if (describeBarrier) {
        const barrier = describeBarrier;
        barrier.remaining -= 1;
        if (barrier.remaining <= 0) {
          describeBarrier = undefined;
          for (const release of barrier.waiting) release();
        } else {
          // released by the last caller, or after 10 s so a broken test cannot hang
          await new Promise<void>((resolve) => {
            barrier.waiting.push(resolve);
            setTimeout(resolve, 10_000).unref();
          });
        }
      }
      const names = (input.repositoryNames as string[] | undefined) ?? [...repositories.keys()];
      const found = names.map((name) => {
        const repo = repositories.get(name);
        if (!repo) throw new AwsError("RepositoryNotFoundException", `The repository with name '${name}' does not exist in the registry with id '${accountId}'`);
        return describeRepository(repo);
      });
      return { repositories: found };
    },
    CreateRepository: (input) => {
      const name = String(input.repositoryName);
      if (repositories.has(name)) {
        createOutcomes.push("already-exists");
        throw new AwsError("RepositoryAlreadyExistsException", `The repository with name '${name}' already exists in the registry with id '${accountId}'`);
      }
      const repo: StandInRepository = {
        arn: `arn:aws:ecr:${region}:${accountId}:repository/${name}`,
        name,
        createdAt: Date.now(),
        imageTagMutability: String(input.imageTagMutability ?? "MUTABLE"),
        scanOnPush: Boolean((input.imageScanningConfiguration as { scanOnPush?: boolean } | undefined)?.scanOnPush),
        tags: new Map(),
      };
      applyTags(repo, input.tags);
      repositories.set(name, repo);
      createOutcomes.push("created");
      return { repository: describeRepository(repo) };
    },
    TagResource: (input) => {
      applyTags(repositoryByArn(input.resourceArn), input.tags);
      return {};
    },
    ListTagsForResource: (input) => ({ tags: [...repositoryByArn(input.resourceArn).tags].map(([Key, Value]) => ({ Key, Value })) }),
  };

  const send = (response: ServerResponse, status: number, body: unknown, errorType?: string) => {
    response.writeHead(status, { "content-type": "application/x-amz-json-1.1", ...(errorType ? { "x-amzn-errortype": errorType } : {}) });
    response.end(JSON.stringify(body));
  };

  const server = createServer((request, response) => {
    void (async () => {
      const target = String(request.headers["x-amz-target"] ?? "");
      const operation = target.startsWith(ECR_TARGET_PREFIX) ? target.slice(ECR_TARGET_PREFIX.length) : "";
      try {
        const body = await readBody(request);
        const handler = operations[operation];
        if (!handler) throw new AwsError("UnknownOperationException", `operation ${operation || target} is not supported by the ECR stand-in`);
        calls[operation] = (calls[operation] ?? 0) + 1;
        const accessKeyId = /Credential=([^/,\s]+)\//.exec(String(request.headers.authorization ?? ""))?.[1];
        if (!accessKeyId || !options.acceptedAccessKeyIds.includes(accessKeyId)) {
          throw new AwsError("UnrecognizedClientException", "The security token included in the request is invalid.");
        }
        send(response, 200, await handler(body ? (JSON.parse(body) as Record<string, unknown>) : {}));
      } catch (error) {
        const aws = error instanceof AwsError ? error : new AwsError("ServerException", (error as Error).message, 500);
        send(response, aws.status, { __type: aws.type, message: aws.message }, aws.type);
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    calls,
    createOutcomes,
    repositories,
    issuedTokens,
    setTokenTtl(ms) {
      tokenTtlMs = ms;
    },
    holdDescribes(count) {
      describeBarrier = { remaining: count, waiting: [] };
    },
    resetCounts() {
      for (const key of Object.keys(calls)) delete calls[key];
      createOutcomes.length = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
