/**
 * Child process for the packing benchmark: packs one tree with our filter + packer, piped
 * (`stream.pipe`, as dockerode pipes the worker's packer into the daemon's socket) into
 * - `socket`: fd 3, one end of a unix socket pair whose other end the runner counts, as the daemon
 *   reads the worker's; or `pipe`: fd 3, a pipe with `wc -c` at the other end, as after GNU tar;
 * - `process`: a Writable in this process that only calls back (the packer alone).
 * Reports time and memory as one JSON line on stdout.
 */
import { createContextFilter, packContext } from "@m1l0/context";
import { once } from "node:events";
import { readFileSync, writeFileSync } from "node:fs";
import { Socket } from "node:net";
import { Writable } from "node:stream";

export type PackSink = "socket" | "pipe" | "process";

export interface PackChildResult {
  bytes: number;
  ms: number;
  rssStartBytes: number;
  /** VmHWM after packing minus RSS before it (VmHWM reset first when the kernel allows) */
  peakGrowthBytes: number;
  /** highest RSS seen by 5 ms sampling, minus RSS before packing */
  sampledGrowthBytes: number;
  /** highest ArrayBuffer memory seen by the same sampling, minus before: the packer's buffers, and any not yet collected by V8 */
  sampledArrayBufferGrowthBytes: number;
  hwmReset: boolean;
}

function vmHwmBytes(): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  if (!match) throw new Error("no VmHWM in /proc/self/status");
  return Number(match[1]) * 1024;
}

const [sink, root, ignoresJson] = process.argv.slice(2) as [PackSink | undefined, string?, string?];
if (!sink || !root || !ignoresJson) throw new Error("usage: pack-child.js socket|pipe|process <root> <ignores as JSON>");
const ignores = JSON.parse(ignoresJson) as string[];

async function packInto(destination: Writable): Promise<number> {
  const filter = await createContextFilter(root!, ignores);
  let bytes = 0;
  const packed = packContext(root!, { filter, tap: { write: (chunk) => void (bytes += chunk.length), end: () => undefined } });
  packed.pipe(destination);
  await Promise.race([once(destination, "finish"), once(packed, "error").then(([error]) => Promise.reject(error as Error))]);
  return bytes;
}

const counter = () =>
  new Writable({
    write(_chunk: Buffer, _encoding, callback) {
      callback();
    },
  });

let hwmReset = true;
try {
  // "5" resets the peak RSS counter to the current RSS (Linux ≥ 4.0), leaving only packing's peak.
  writeFileSync("/proc/self/clear_refs", "5");
} catch {
  hwmReset = false;
}
const rssStartBytes = process.memoryUsage.rss();
const arrayBuffersStart = process.memoryUsage().arrayBuffers;
let sampledPeak = rssStartBytes;
let arrayBuffersPeak = arrayBuffersStart;
const sample = () => {
  sampledPeak = Math.max(sampledPeak, process.memoryUsage.rss());
  arrayBuffersPeak = Math.max(arrayBuffersPeak, process.memoryUsage().arrayBuffers);
};
const sampler = setInterval(sample, 5);

const started = performance.now();
const bytes = await packInto(sink === "process" ? counter() : new Socket({ fd: 3, readable: false, writable: true }));
const ms = performance.now() - started;
clearInterval(sampler);
sample();

const result: PackChildResult = {
  bytes,
  ms,
  rssStartBytes,
  peakGrowthBytes: vmHwmBytes() - rssStartBytes,
  sampledGrowthBytes: sampledPeak - rssStartBytes,
  sampledArrayBufferGrowthBytes: arrayBuffersPeak - arrayBuffersStart,
  hwmReset,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
