/** The CLI's environment, read once. Flags (--api, --token) take precedence over these. */
export interface CliEnv {
  /** M1L0_API_URL [http://127.0.0.1:8080] */
  apiUrl: string;
  /** M1L0_TOKEN: bearer token for the API */
  token: string | undefined;
  /** M1L0_TOKEN_FILE: a file holding the token (used when M1L0_TOKEN and --token are not set) */
  tokenFile: string | undefined;
  /** TERM=dumb disables the redrawn progress view even on a terminal */
  dumbTerminal: boolean;
}

export const DEFAULT_API_URL = "http://127.0.0.1:8080";

// zod is not a dependency of the CLI; a few optional strings do not need it
export function loadCliEnv(source: NodeJS.ProcessEnv = process.env): CliEnv {
  return {
    apiUrl: source.M1L0_API_URL?.trim() || DEFAULT_API_URL,
    token: source.M1L0_TOKEN?.trim() || undefined,
    tokenFile: source.M1L0_TOKEN_FILE?.trim() || undefined,
    dumbTerminal: source.TERM === "dumb",
  };
}
