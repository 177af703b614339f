import { settlesWithin, startHungServer, withGcPressure, type HungServer } from "@m1l0/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { M1l0ApiError, M1l0Client, M1l0TimeoutError } from "../src/index.js";

// An API that accepts connections and never answers, while a full GC runs every 20 ms: every
// SDK call ends at the client's deadline (requestTimeoutMs, or wait's timeoutMs) with an error
// that says so, instead of hanging the orchestrator that called it.
const DEADLINE_MS = 500;
const WATCHDOG_MS = 15_000;

let api: HungServer;
let client: M1l0Client;
beforeAll(async () => {
  api = await startHungServer();
  client = new M1l0Client({ baseUrl: api.address, token: "m1l0_test", requestTimeoutMs: DEADLINE_MS, maxReconnects: 0 });
});
afterAll(async () => api?.close());

const caller = () => new AbortController().signal;

describe("a hung API", () => {
  it.each<[string, () => Promise<unknown>]>([
    ["submit", () => client.submit({ service: "dockerhub", repository: "team/app", source: "https://example.com/x.git" }, { signal: caller() })],
    ["get", () => client.get("bld_x", { signal: caller() })],
    ["list", () => client.list({ signal: caller() })],
    ["cancel", () => client.cancel("bld_x", { signal: caller() })],
    ["logs", () => client.logs("bld_x", { signal: caller() })],
    ["watch (the stream's headers)", async () => {
      for await (const _ of client.watch("bld_x", { signal: caller() })) break;
    }],
  ])("%s ends at the client's deadline", async (_name, call) => {
    const settled = await withGcPressure(() => settlesWithin(call(), WATCHDOG_MS));
    expect(settled.outcome, `still waiting after ${settled.ms} ms`).toBe("rejected");
    if (settled.outcome !== "rejected") return;
    expect(settled.error, String(settled.error)).toBeInstanceOf(M1l0ApiError);
    expect((settled.error as Error).message).toMatch(/did not answer within 0.5 s/);
    expect(settled.ms).toBeGreaterThanOrEqual(DEADLINE_MS - 50);
  });

  it("wait ends at its own timeoutMs with M1l0TimeoutError", async () => {
    const patient = new M1l0Client({ baseUrl: api.address, requestTimeoutMs: 60_000 });
    const settled = await withGcPressure(() => settlesWithin(patient.wait("bld_x", { timeoutMs: DEADLINE_MS, signal: caller() }), WATCHDOG_MS));
    expect(settled.outcome, `still waiting after ${settled.ms} ms`).toBe("rejected");
    if (settled.outcome === "rejected") expect(settled.error).toBeInstanceOf(M1l0TimeoutError);
    expect(api.connections).toBeGreaterThan(0);
  });
});
