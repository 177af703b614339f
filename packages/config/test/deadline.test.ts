import { settlesWithin, withGcPressure } from "@m1l0/testkit";
import { describe, expect, it } from "vitest";
import { AbortScope, DeadlineExceeded, withDeadline } from "../src/index.js";

const never = () => new Promise<never>(() => undefined);

describe("AbortScope", () => {
  it("aborts with onTimeout's reason when its time is up, and says so", async () => {
    const scope = new AbortScope({ timeoutMs: 50, onTimeout: () => new Error("too slow") });
    await expect(scope.race(never())).rejects.toThrow("too slow");
    expect(scope.signal.aborted).toBe(true);
    expect(scope.timedOut).toBe(true);
  });

  it("follows its parent with the parent's reason, and is not a timeout then", async () => {
    const parent = new AbortController();
    const scope = new AbortScope({ timeoutMs: 60_000, signal: parent.signal });
    setTimeout(() => parent.abort(new Error("cancelled by the user")), 10);
    await expect(scope.race(never())).rejects.toThrow("cancelled by the user");
    expect(scope.timedOut).toBe(false);
  });

  it("starts aborted under an aborted parent", () => {
    const parent = new AbortController();
    parent.abort(new Error("gone"));
    const scope = new AbortScope({ timeoutMs: 60_000, signal: parent.signal });
    expect(scope.signal.aborted).toBe(true);
    expect((scope.signal.reason as Error).message).toBe("gone");
  });

  it("settles with the work when the work is first, and dispose stops the timer and the parent", async () => {
    const parent = new AbortController();
    const scope = new AbortScope({ timeoutMs: 30, signal: parent.signal });
    await expect(scope.race(Promise.resolve(42))).resolves.toBe(42);
    scope.dispose();
    parent.abort();
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(scope.signal.aborted).toBe(false);
  });

  it("stopTimer keeps following the parent (a stream whose headers came)", async () => {
    const parent = new AbortController();
    const scope = new AbortScope({ timeoutMs: 30, signal: parent.signal });
    scope.stopTimer();
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(scope.signal.aborted).toBe(false);
    parent.abort(new Error("later"));
    expect(scope.signal.aborted).toBe(true);
  });
});

describe("withDeadline", () => {
  it("ends a wait whose work ignores the signal, with DeadlineExceeded by default", async () => {
    await expect(withDeadline({ timeoutMs: 30 }, never)).rejects.toBeInstanceOf(DeadlineExceeded);
  });

  it("fires under garbage-collection pressure, with a parent signal (the composite case of nodejs/node#57736)", async () => {
    const parent = new AbortController();
    const settled = await withGcPressure(() => settlesWithin(withDeadline({ timeoutMs: 200, signal: parent.signal }, (signal) => fetchThatWaitsFor(signal)), 10_000));
    expect(settled.outcome).toBe("rejected");
    expect(settled.ms).toBeLessThan(10_000);
  });
});

/** stands for a client that watches only the signal: it settles only when the signal aborts */
function fetchThatWaitsFor(signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(signal.reason as Error), { once: true }));
}
