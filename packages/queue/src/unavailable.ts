/**
 * True for the errors ioredis raises while Redis is unreachable (closed connection, command
 * timeout, retries exhausted), so the API can answer 503 instead of 500 during an outage.
 */
export function isRedisUnavailableError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  if (error.name === "MaxRetriesPerRequestError") return true;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE"].includes(code)) return true;
  return /Connection is closed|Command timed out|Stream isn't writeable|enableOfflineQueue|Reached the max retries per request/i.test(error.message);
}
