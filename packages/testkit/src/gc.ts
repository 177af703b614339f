/**
 * Garbage-collection pressure, for tests of deadlines: Node 20 can collect a timeout signal
 * held only inside `AbortSignal.any` (nodejs/node#57736), and then the deadline never fires.
 * Forcing a full GC every few milliseconds while a peer hangs makes that happen every time
 * instead of only on a busy machine. Needs node's `--expose-gc` (vitest `test.execArgv`).
 */
export async function withGcPressure<T>(work: () => Promise<T>, everyMs = 20): Promise<T> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== "function") throw new Error("withGcPressure needs node --expose-gc (set test.execArgv: ['--expose-gc'] in the project's vitest config)");
  const timer = setInterval(() => gc(), everyMs);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}

export type Settled<T> = { outcome: "resolved"; value: T; ms: number } | { outcome: "rejected"; error: unknown; ms: number } | { outcome: "pending"; ms: number };

/**
 * How `promise` settled within `limitMs`: a test's own watchdog, so a wait that never ends
 * fails the test with "pending" instead of hanging it.
 */
export async function settlesWithin<T>(promise: Promise<T>, limitMs: number): Promise<Settled<T>> {
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = new Promise<"pending">((resolve) => (timer = setTimeout(() => resolve("pending"), limitMs)));
  try {
    const settled = await Promise.race([
      promise.then(
        (value) => ({ outcome: "resolved" as const, value }),
        (error: unknown) => ({ outcome: "rejected" as const, error }),
      ),
      pending,
    ]);
    const ms = Math.round(performance.now() - started);
    return settled === "pending" ? { outcome: "pending", ms } : { ...settled, ms };
  } finally {
    clearTimeout(timer);
  }
}
