import { pino, type Logger } from "pino";

/** Paths that could hold a secret if a careless object is logged; pino replaces them. */
export const REDACT_PATHS = ["password", "token", "auth", "authconfig", "*.password", "*.token", "*.auth", "*.authconfig", "gitCredentials", "*.secretAccessKey", "headers.authorization"];

export function createLogger(level: string, name: string): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: "[redacted]" } });
}
