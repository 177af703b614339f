/**
 * Deadlines that always fire.
 *
 * Node 20 can garbage-collect a timeout signal that is held only inside `AbortSignal.any([...])`
 * (nodejs/node#57736, #55428): under GC pressure such a deadline never comes and a hung peer
 * holds the wait for good. So no deadline in this project is built from `AbortSignal.timeout`
 * or `AbortSignal.any`. An AbortScope owns a plain AbortController and a plain timer whose
 * callback holds the controller (strong references, cleared in `dispose`), and it follows a
 * parent signal through a listener the parent keeps alive. `race` also ends the wait itself,
 * so a library that ignores the signal cannot hold it either.
 */

export interface AbortScopeOptions {
  /** milliseconds until the scope aborts with `onTimeout()`; undefined: no timer */
  timeoutMs?: number | undefined;
  /** aborting it aborts the scope, with its reason (e.g. a build's cancel or deadline) */
  signal?: AbortSignal | undefined;
  /** the reason the scope aborts with when its time is up */
  onTimeout?: () => unknown;
}

export class DeadlineExceeded extends Error {
  override readonly name = "DeadlineExceeded";
  constructor(readonly timeoutMs: number) {
    super(`no answer within ${formatMs(timeoutMs)}`);
  }
}

function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}

export class AbortScope {
  readonly #controller = new AbortController();
  readonly #parent: AbortSignal | undefined;
  readonly #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #followParent = () => this.abort(this.#parent?.reason);
  #timedOut = false;

  constructor(options: AbortScopeOptions = {}) {
    this.#parent = options.signal;
    if (this.#parent?.aborted) {
      this.#controller.abort(this.#parent.reason);
    } else {
      this.#parent?.addEventListener("abort", this.#followParent, { once: true });
    }
    const { timeoutMs } = options;
    if (timeoutMs !== undefined && !this.#controller.signal.aborted) {
      const onTimeout = options.onTimeout ?? (() => new DeadlineExceeded(timeoutMs));
      this.#timer = setTimeout(() => {
        this.#timedOut = true;
        this.abort(onTimeout());
      }, timeoutMs);
    }
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** true once the scope's own timer fired (not the parent, not `abort`) */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  abort(reason?: unknown): void {
    if (this.#controller.signal.aborted) return;
    this.#controller.abort(reason);
    this.dispose();
  }

  /**
   * Settles with `work`, or rejects with the abort reason as soon as the scope aborts, whether or
   * not `work` watches the signal. A late rejection of `work` is handled (nobody is left to tell).
   */
  race<T>(work: Promise<T>): Promise<T> {
    work.catch(() => undefined);
    const signal = this.#controller.signal;
    if (signal.aborted) return Promise.reject(signal.reason as unknown);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(signal.reason as unknown);
      signal.addEventListener("abort", onAbort, { once: true });
      work.then(
        (value) => {
          signal.removeEventListener("abort", onAbort);
          resolve(value);
        },
        (error: unknown) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      );
    });
  }

  /** The wait the timer guarded is over (e.g. a stream's headers came): keep following the parent only. */
  stopTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  /** Stops the timer and stops following the parent; the signal keeps its state. */
  dispose(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#parent?.removeEventListener("abort", this.#followParent);
  }
}

/**
 * Runs `work` under a deadline (and a parent signal): `work` gets the scope's signal to pass on,
 * and the call settles no later than the deadline, with `onTimeout()`'s error.
 */
export async function withDeadline<T>(options: AbortScopeOptions & { timeoutMs: number }, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const scope = new AbortScope(options);
  try {
    return await scope.race(work(scope.signal));
  } finally {
    scope.dispose();
  }
}

/**
 * An AWS SDK v3 middleware (add it at the `initialize` step, which wraps the SDK's retries)
 * that gives every `client.send` one deadline. Pair it with the request handler's socket
 * timeouts, which close the connection a hung call leaves behind.
 */
export function deadlineMiddleware(timeoutMs: number, describe: (timeoutMs: number) => Error) {
  return <Args, Output>(next: (args: Args) => Promise<Output>) =>
    (args: Args): Promise<Output> =>
      withDeadline({ timeoutMs, onTimeout: () => describe(timeoutMs) }, () => next(args));
}
