import { BuilderError, withDeadline } from "@m1l0/config";

/** One message of a daemon's JSON progress stream (build, pull, push). */
export interface ProgressMessage {
  stream?: string;
  status?: string;
  id?: string;
  progress?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string; Digest?: string; Tag?: string };
}

/** The daemon answered with an HTTP error (a statement about the request, not an outage). */
export function daemonAnswered(cause: unknown): cause is { statusCode: number; message: string; json?: { message?: string } } {
  return typeof cause === "object" && cause !== null && typeof (cause as { statusCode?: unknown }).statusCode === "number";
}

export function daemonMessage(cause: { message: string; json?: { message?: string } }): string {
  return cause.json?.message ?? cause.message.replace(/^\(HTTP code \d+\) [\w ]+ - /, "");
}

export function daemonError(cause: unknown, endpoint = "its DOCKER_SOCKET"): BuilderError {
  const message = cause instanceof Error ? cause.message : String(cause);
  return new BuilderError(
    "DAEMON_UNREACHABLE",
    `the worker's Docker daemon (${endpoint}) is unreachable: ${message}; check that dockerd is running on that worker and DOCKER_SOCKET points at it`,
    { cause },
  );
}

/** dockerode passes `abortSignal` on to these calls; its type definitions do not say so */
export interface SignalledCalls {
  info(options: { abortSignal: AbortSignal }): Promise<unknown>;
  ping(options: { abortSignal: AbortSignal }): Promise<unknown>;
}

/** Deadline of one short daemon call (ping, info, inspect, list, remove) when the builder is not told otherwise. */
export const DAEMON_CALL_TIMEOUT_MS = 30_000;

/**
 * One short daemon call under a deadline: a daemon that accepts and never answers gives
 * DAEMON_UNREACHABLE, never silence. Streams (build, pull, push) run under the build's own deadline.
 */
export function daemonCall<T>(
  target: { endpoint: string; timeoutMs: number },
  what: string,
  run: (abortSignal: AbortSignal) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const seconds = target.timeoutMs / 1000;
  return withDeadline({ timeoutMs: target.timeoutMs, signal, onTimeout: () => daemonError(new Error(`${what} got no answer within ${seconds} s`), target.endpoint) }, run);
}

export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

/** An error cause at the start of a line, or right after a progress text ending in "..." */
const ERROR_LINE = /(?:^|\.\.\.\s*)((?:ERROR|E:|error:).*)$/i;

/**
 * Classifies a failed build from the daemon's last error and the step it happened in,
 * so users learn what to fix (a requirement, the Dockerfile, the base image…).
 */
export function classifyBuildError(message: string, currentStep: string, recentLines: string[]): BuilderError {
  // pip and apt print the cause first ("Could not find a version…"), then a summary. apt's
  // "E: …" goes to stderr while stdout's "Reading package lists..." has no newline yet, so the
  // two can share one line: the cause is found after such a progress prefix too.
  const lastErrorLine = recentLines.map((line) => ERROR_LINE.exec(line.trim())?.[1]).find((cause) => cause !== undefined);
  if (/pull access denied|manifest unknown|repository does not exist|not found: manifest|No such image|failed to resolve reference|dial tcp|no such host/i.test(message) && /^Step \d+\/\d+ : FROM /i.test(currentStep)) {
    const base = currentStep.replace(/^Step \d+\/\d+ : FROM /i, "").trim();
    return new BuilderError("BASE_IMAGE_UNAVAILABLE", `base image ${base} is not available to the build daemon (${message}); ask the operator to make it pullable or pre-load it`);
  }
  if (/dockerfile parse error|unknown instruction|Dockerfile parse|failed to parse|cannot locate specified Dockerfile/i.test(message)) {
    return new BuilderError("DOCKERFILE_ERROR", `Dockerfile error: ${message}`);
  }
  const install = dependencyStep(currentStep);
  if (install && /returned a non-zero code/.test(message)) {
    return new BuilderError("DEPENDENCY_INSTALL_FAILED", `${install.what} failed${lastErrorLine ? `: ${lastErrorLine.trim()}` : ""} (${install.hint})`);
  }
  if (/COPY failed|ADD failed|no source files were specified/i.test(message)) {
    return new BuilderError("DOCKERFILE_ERROR", `Dockerfile error in "${currentStep}": ${message}`);
  }
  return new BuilderError("BUILD_FAILED", `build failed at "${currentStep || "start"}": ${message}${lastErrorLine ? ` (${lastErrorLine.trim()})` : ""}`);
}

/** Which layout's install step a generated Dockerfile's step is (see @m1l0/dockerfile), if any. */
function dependencyStep(step: string): { what: string; hint: string } | undefined {
  if (/apt-get/.test(step)) return { what: "installing the packages apt.txt lists", hint: "check the names in apt.txt against the base image's Debian release, and that builds reach its apt sources: BUILD_EGRESS, BUILD_APT_SOURCES" };
  if (/pip install -r requirements\.txt/.test(step)) return { what: "installing requirements.txt", hint: "check the package names and versions in requirements.txt" };
  if (/pyproject\.toml/.test(step)) return { what: "installing the dependencies pyproject.toml lists", hint: "check [project] dependencies in pyproject.toml" };
  if (/"pip","install","\."|pip install \.(\s|$)/.test(step)) return { what: "installing the project (pip install .)", hint: "check pyproject.toml / setup.py and the dependencies they declare" };
  if (/pip install/.test(step)) return { what: "a pip install step", hint: "check the packages it installs" };
  return undefined;
}

/** A RUN step could not fork because the build's processes hit the pids limit. */
export const FORK_REFUSED = /can't fork|cannot fork|fork: retry|fork: Resource temporarily unavailable|Resource temporarily unavailable|pthread_create failed|BlockingIOError|EAGAIN/i;
