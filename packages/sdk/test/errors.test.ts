import { describe, expect, it } from "vitest";
import { M1l0ApiError, M1l0Client } from "../src/index.js";

function answering(status: number, body: unknown, headers: Record<string, string> = {}): typeof fetch {
  return async () => new Response(typeof body === "string" ? body : JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
}

describe("errors the API answers about tokens", () => {
  it("401: UNAUTHENTICATED with a message that says what to do", async () => {
    const client = new M1l0Client({ baseUrl: "http://api", fetch: answering(401, { error: { code: "UNAUTHENTICATED", message: "invalid API token" } }) });
    const error = (await client.get("bld_x").catch((e: unknown) => e)) as M1l0ApiError;
    expect(error).toBeInstanceOf(M1l0ApiError);
    expect(error).toMatchObject({ status: 401, code: "UNAUTHENTICATED", isUnauthenticated: true });
    expect(error.message).toMatch(/^invalid API token \(the API needs a valid token: pass `token` to M1l0Client/);
  });

  it("429: RATE_LIMITED with Retry-After as retryAfterSeconds, also from a proxy's non-JSON answer", async () => {
    const ours = new M1l0Client({ baseUrl: "http://api", fetch: answering(429, { error: { code: "RATE_LIMITED", message: "build submission limit reached for this token (2 per 60 s); retry in 42 seconds" } }, { "retry-after": "42" }) });
    const error = (await ours.submit({ service: "dockerhub", repository: "a/b", source: "https://x.org/a.git" }).catch((e: unknown) => e)) as M1l0ApiError;
    expect(error).toMatchObject({ status: 429, code: "RATE_LIMITED", retryAfterSeconds: 42, isRateLimited: true });
    expect(error.message).toMatch(/retry in 42 seconds$/);
    const proxy = new M1l0Client({ baseUrl: "http://api", fetch: answering(429, "Too Many Requests", { "retry-after": "7", "content-type": "text/plain" }) });
    const fromProxy = (await proxy.list().catch((e: unknown) => e)) as M1l0ApiError;
    expect(fromProxy).toMatchObject({ code: "RATE_LIMITED", retryAfterSeconds: 7, message: "Too Many Requests (retry after 7 s)" });
  });

  it("sends the token as a bearer header", async () => {
    let seen: string | null = null;
    const client = new M1l0Client({
      baseUrl: "http://api",
      token: "m1l0_secret",
      fetch: async (_input, init) => {
        seen = new Headers(init?.headers).get("authorization");
        return new Response(JSON.stringify({ builds: [] }), { status: 200 });
      },
    });
    await client.list();
    expect(seen).toBe("Bearer m1l0_secret");
  });
});

describe("paging", () => {
  it("listPage sends the cursor and returns nextCursor; listAll follows every page and stops on the last", async () => {
    const pages: Record<string, { builds: Array<{ id: string }>; nextCursor: string | null }> = {
      "": { builds: [{ id: "bld_3" }, { id: "bld_2" }], nextCursor: "c1" },
      c1: { builds: [{ id: "bld_1" }], nextCursor: null },
    };
    const asked: string[] = [];
    const client = new M1l0Client({
      baseUrl: "http://api",
      fetch: async (input) => {
        const url = new URL(String(input));
        asked.push(url.search);
        return new Response(JSON.stringify(pages[url.searchParams.get("cursor") ?? ""]), { status: 200 });
      },
    });
    expect(await client.listPage({ limit: 2, status: "failed" })).toEqual({ builds: [{ id: "bld_3" }, { id: "bld_2" }], nextCursor: "c1" });
    expect(await client.listPage({ cursor: "c1" })).toEqual({ builds: [{ id: "bld_1" }] });
    const all: string[] = [];
    for await (const build of client.listAll({ limit: 2 })) all.push(build.id);
    expect(all).toEqual(["bld_3", "bld_2", "bld_1"]);
    expect(asked).toEqual(["?status=failed&limit=2", "?cursor=c1", "?limit=2", "?limit=2&cursor=c1"]);
  });
});
