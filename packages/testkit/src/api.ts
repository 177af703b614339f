const tokens = new Map<string, string>();

/** Makes apiFetch (and every helper built on it) send `Authorization: Bearer <token>` to this API (an origin). */
export function registerApiToken(apiUrl: string, token: string): void {
  tokens.set(new URL(apiUrl).origin, token);
}

/** The bearer header for an API started by startStack (empty for an unknown one). */
export function authHeaders(url: string): Record<string, string> {
  const token = tokens.get(new URL(url).origin);
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** fetch that adds the registered token for the URL's API, unless the caller set an authorization header. */
export async function apiFetch(url: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  for (const [name, value] of Object.entries(authHeaders(url))) if (!headers.has(name)) headers.set(name, value);
  return fetch(url, { ...init, headers });
}
