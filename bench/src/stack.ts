import { startStack as startTestStack, type RunningStack } from "@m1l0/testkit";

// The stack, the services and the git fixtures come from the test kit (packages/testkit), shared with e2e and chaos.
export { ROOT_DIR, freePort, type RunningStack, type Services } from "@m1l0/testkit";

/** BuildStore's default namespace: the benchmarks' records live where a deployment's would (ingress cleans them up there). */
const DEFAULT_KEY_PREFIX = "m1l0:";
/** Output lines kept per stack: ingress runs log tens of thousands of requests; only the tail diagnoses a failure. */
const MAX_KEPT_LOG_LINES = 200;

/**
 * The test kit's stack as the benchmarks run it: one worker per `workers` entry (none for
 * `worker: false`), concurrency 1 unless told, the submission limit far out of reach.
 */
export function startStack(options: { worker: boolean; workerConcurrency?: number; logLevel?: string; workers?: NodeJS.ProcessEnv[]; keyPrefix?: string; apiEnv?: NodeJS.ProcessEnv; apiNodeArgs?: string[] }): Promise<RunningStack> {
  const [first = {}, ...rest] = options.workers ?? [{}];
  return startTestStack({
    label: "bench",
    concurrency: options.workerConcurrency ?? 1,
    worker: options.worker ? first : false,
    extraWorkers: options.worker ? rest : [],
    keyPrefix: options.keyPrefix ?? DEFAULT_KEY_PREFIX,
    maxLogLines: MAX_KEPT_LOG_LINES,
    ...(options.logLevel ? { logLevel: options.logLevel } : {}),
    apiEnv: { SUBMIT_RATE_LIMIT_MAX: "100000000", ...options.apiEnv },
    ...(options.apiNodeArgs ? { apiNodeArgs: options.apiNodeArgs } : {}),
  });
}
