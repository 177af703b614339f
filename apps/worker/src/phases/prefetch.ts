import { AbortScope } from "@m1l0/config";

/**
 * Work an attempt may start before it knows it needs it (the source fetch, the pull of the
 * cache image): started as soon as the answer cannot be `cached`, so it overlaps the rest of
 * the lookup instead of following it; dropped (aborted, then awaited) if the answer is `cached`
 * after all, or when the attempt ends without using it.
 */
export class Prefetch<T> {
  private running: Promise<T> | undefined;
  /** follows the attempt's signal (cancel, timeout, shutdown) and adds drop() */
  private readonly scope: AbortScope;

  constructor(
    private readonly work: (signal: AbortSignal) => Promise<T>,
    signal: AbortSignal | undefined,
  ) {
    this.scope = new AbortScope(signal ? { signal } : {});
  }

  /** Starts the work unless it runs already (idempotent). */
  start(): void {
    if (this.running) return;
    this.running = this.work(this.scope.signal);
    // awaited by result() or drop(), never unhandled meanwhile; once settled, stop following the attempt's signal
    this.running.then(() => this.scope.dispose(), () => this.scope.dispose());
  }

  /** The work's result, starting it now if it has not started. */
  result(): Promise<T> {
    this.start();
    return this.running as Promise<T>;
  }

  /** Aborts started work and waits until it has let go of what it uses (a work dir, a daemon pull). */
  async drop(why: string): Promise<void> {
    if (!this.running) return;
    this.scope.abort(new Error(why));
    await this.running.catch(() => undefined);
  }
}
