import v8 from "node:v8";

/**
 * How far V8 lets the old generation grow past the live heap before its next full collection.
 * By default V8 lets it reach about four times the live heap (and starts with a large
 * allowance): a worker whose live heap stays near 40 MiB build after build still climbed from
 * 131 to 246 MiB of RSS over 1,000 builds (benchmark 9), all of it garbage not yet collected.
 * A long-running process with a small, steady live set is better served by collecting sooner:
 * each full collection of a heap that size is short, and RSS stays near what is live.
 *
 * `--heap-growing-percent` is read by V8 each time it sizes the heap after a collection, so
 * setting it at start-up covers every way the worker is launched (image, compose, swarm,
 * Kubernetes, scripts, tests) without a flag on each command line. Returns what it set, for
 * the start-up log; 0 leaves V8's own heuristics.
 */
export function limitHeapGrowth(percent: number): string | undefined {
  if (percent <= 0) return undefined;
  v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
  return `heap: a full collection once the old generation grows ${percent} % past the live heap (WORKER_HEAP_GROWING_PERCENT)`;
}
