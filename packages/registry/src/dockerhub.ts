import { BuilderError, type BuildConfig } from "@m1l0/config";
import type { PushTarget, RegistryResolver } from "./types.js";

export interface DockerHubOptions {
  /** docker.io by default; tests and mirrors point it at another registry host */
  registryHost?: string;
  username?: string;
  /** access token or password */
  token?: string;
}

const DOCKER_HUB_HOSTS = new Set(["docker.io", "index.docker.io", "registry-1.docker.io"]);

/** `service: dockerhub` — `<user>/<project>` repositories with a username + access token. */
export class DockerHubResolver implements RegistryResolver {
  private readonly host: string;

  constructor(private readonly options: DockerHubOptions = {}) {
    this.host = options.registryHost ?? "docker.io";
  }

  async resolve(config: BuildConfig): Promise<PushTarget> {
    if (config.repository.split("/").length !== 2) {
      throw new BuilderError("VALIDATION_FAILED", `Docker Hub repositories are <user>/<project>; got "${config.repository}"`, {
        issues: [{ field: "repository", message: "must be <user>/<project> for dockerhub" }],
      });
    }
    const isHub = DOCKER_HUB_HOSTS.has(this.host);
    const { username, token } = this.options;
    const auth = username && token ? { username, password: token, serveraddress: isHub ? "https://index.docker.io/v1/" : this.host } : undefined;
    return {
      registry: isHub ? "docker.io" : this.host,
      repository: config.repository,
      tag: config.revision,
      reference: `${isHub ? "docker.io" : this.host}/${config.repository}:${config.revision}`,
      auth: async () => auth,
    };
  }
}
