import type { BuildConfig } from "@m1l0/config";

/** What Docker's push API needs to authenticate; lives only in worker memory. */
export interface RegistryAuth {
  username: string;
  password: string;
  serveraddress: string;
}

export interface PushTarget {
  /** registry host as users see it, e.g. docker.io or 123.dkr.ecr.eu-west-1.amazonaws.com */
  registry: string;
  repository: string;
  tag: string;
  /** the full reference the image is tagged and pushed as */
  reference: string;
  /**
   * The credentials for this target right now (undefined: anonymous). Called right before
   * each registry call, since short-lived ones (ECR tokens) can expire while a long build runs.
   */
  auth(): Promise<RegistryAuth | undefined>;
}

/** Port: turns a build config into where to push and with which credentials. */
export interface RegistryResolver {
  resolve(config: BuildConfig): Promise<PushTarget>;
}
