import { BuilderError } from "@m1l0/config";

/** Classifies a push error message from the Docker daemon into an actionable error. */
export function classifyPushError(registry: string, message: string): BuilderError {
  if (/unauthorized|authentication required|denied|no basic auth credentials|incorrect username or password|403 Forbidden/i.test(message)) {
    return new BuilderError("REGISTRY_AUTH_FAILED", `registry authentication failed for ${registry}: check the worker's credentials for this registry`, {
      retryable: false,
    });
  }
  if (/connection refused|no such host|i\/o timeout|TLS handshake|dial tcp|EOF|503|502|504|Service Unavailable/i.test(message)) {
    return new BuilderError("REGISTRY_UNREACHABLE", `registry ${registry} is unreachable: ${message}`);
  }
  return new BuilderError("PUSH_FAILED", `push to ${registry} failed: ${message}`);
}
