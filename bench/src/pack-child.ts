/**
 * Child process for the packing benchmark: packs one tree with our filter + packer into a byte
 * counter and reports time and memory as one JSON line. A process of its own so that VmHWM
 * (peak RSS) belongs to the packing alone and not to the runner.
 */
import { createContextFilter, packContext } from "@m1l0/context";
import { readFileSync, writeFileSync } from "node:fs";

export interface PackChildResult {
  bytes: number;
  ms: number;
  rssStartBytes: number;
  /** VmHWM after packing minus RSS before it (VmHWM reset first when the kernel allows) */
  peakGrowthBytes: number;
  /** highest RSS seen by 5 ms sampling, minus RSS before packing */
  sampledGrowthBytes: number;
  /** highest ArrayBuffer memory seen by the same sampling, minus before: the chunks pushed and not yet collected by V8 */
  sampledArrayBufferGrowthBytes: number;
  hwmReset: boolean;
}

function vmHwmBytes(): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  if (!match) throw new Error("no VmHWM in /proc/self/status");
  return Number(match[1]) * 1024;
}

const [root, ignoresJson] = process.argv.slice(2);
if (!root || !ignoresJson) throw new Error("usage: pack-child.js <root> <ignores as JSON>");
const ignores = JSON.parse(ignoresJson) as string[];

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
const filter = await createContextFilter(root, ignores);
let bytes = 0;
for await (const chunk of packContext(root, { filter })) bytes += (chunk as Buffer).length;
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
