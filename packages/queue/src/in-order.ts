/**
 * Runs tasks one at a time per key, in call order; tasks of different keys do not wait for
 * each other. A task's failure does not stop the ones queued behind it. Keys are forgotten once
 * their last task settles, so memory follows what is in flight.
 */
export class InOrderPerKey {
  private readonly tails = new Map<string, Promise<void>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const run = (this.tails.get(key) ?? Promise.resolve()).then(task);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, settled);
    void settled.then(() => {
      if (this.tails.get(key) === settled) this.tails.delete(key);
    });
    return run;
  }
}
