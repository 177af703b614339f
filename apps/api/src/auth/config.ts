import { readFileSync } from "node:fs";
import { formatApiTokenLine, parseApiTokenLines, type ApiTokenEntry } from "@m1l0/config";
import type { ApiEnv } from "../env.js";
import { Authenticator } from "./principal.js";

export type TokenSources = Pick<ApiEnv, "API_TOKENS_FILE" | "API_TOKENS">;
export type ReadTokenFile = (file: string) => string;

const readUtf8: ReadTokenFile = (file) => readFileSync(file, "utf8");

/** Every configured token entry (API_TOKENS_FILE, then API_TOKENS), checked as one list. */
export function loadTokenEntries(env: TokenSources, readFile: ReadTokenFile = readUtf8): ApiTokenEntry[] {
  const entries: ApiTokenEntry[] = [];
  if (env.API_TOKENS_FILE) {
    let text: string;
    try {
      text = readFile(env.API_TOKENS_FILE);
    } catch (error) {
      throw new Error(`API_TOKENS_FILE: cannot read ${env.API_TOKENS_FILE}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
    }
    entries.push(...parseApiTokenLines(text, "API_TOKENS_FILE"));
  }
  // one parse over both sources, so a name or hash listed in both is refused as a duplicate
  return env.API_TOKENS ? parseApiTokenLines([...entries.map(formatApiTokenLine), env.API_TOKENS].join("\n"), "API_TOKENS_FILE + API_TOKENS") : entries;
}

/**
 * The operator's tokens (API_TOKENS_FILE and API_TOKENS) as an Authenticator. Secure by
 * default: no tokens is a startup error unless AUTH_DISABLED=true says otherwise, and
 * AUTH_DISABLED with tokens configured is a contradiction, refused too.
 */
export function authenticatorFromEnv(env: TokenSources & Pick<ApiEnv, "AUTH_DISABLED">, readFile: ReadTokenFile = readUtf8): Authenticator {
  const all = loadTokenEntries(env, readFile);
  if (env.AUTH_DISABLED) {
    if (all.length > 0) throw new Error("AUTH_DISABLED=true while API tokens are configured: remove one or the other");
    return Authenticator.disabled();
  }
  if (all.length === 0) {
    throw new Error("no API tokens configured: set API_TOKENS_FILE (entries from `m1l0 token create`) or API_TOKENS; AUTH_DISABLED=true serves without authentication (development only)");
  }
  return Authenticator.withTokens(all);
}
