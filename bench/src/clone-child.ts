/**
 * Child process for the clone benchmark: fetches one git source with the worker's own
 * fetchSource (our own depth-1 fetch) into a work dir and reports time and memory as one
 * JSON line. A process of its own so that VmHWM (peak RSS) belongs to the fetch alone.
 */
import { fetchSource } from "@m1l0/source";
import { readFileSync, writeFileSync } from "node:fs";

export interface CloneChildResult {
  ms: number;
  commit: string;
  rssStartBytes: number;
  /** VmHWM after the fetch minus RSS before it (VmHWM reset first when the kernel allows) */
  peakGrowthBytes: number;
  hwmReset: boolean;
  /** at each progress line (the end of a phase): seconds since the start and VmHWM growth so far */
  phases: Array<{ line: string; ms: number; peakGrowthBytes: number }>;
}

function vmHwmBytes(): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  if (!match) throw new Error("no VmHWM in /proc/self/status");
  return Number(match[1]) * 1024;
}

const [source, workDir] = process.argv.slice(2);
if (!source || !workDir) throw new Error("usage: clone-child.js <git url> <empty work dir>");

let hwmReset = true;
try {
  // "5" resets the peak RSS counter to the current RSS (Linux ≥ 4.0), leaving only the fetch's peak.
  writeFileSync("/proc/self/clear_refs", "5");
} catch {
  hwmReset = false;
}
const rssStartBytes = process.memoryUsage.rss();
const started = performance.now();
// the worker's policy for a local git server (ALLOW_HTTP_SOURCES, SOURCE_HOST_ALLOWLIST), default caps
const phases: CloneChildResult["phases"] = [];
const onLog = (line: string) => void phases.push({ line: line.replace(/:.*$/, ""), ms: performance.now() - started, peakGrowthBytes: vmHwmBytes() - rssStartBytes });
const fetched = await fetchSource({ source, workDir, onLog, policy: { allowHttp: true, allowDir: false, hostAllowlist: ["127.0.0.0/8", "::1"] } });
const ms = performance.now() - started;

const result: CloneChildResult = { ms, commit: fetched.commit ?? "", rssStartBytes, peakGrowthBytes: vmHwmBytes() - rssStartBytes, hwmReset, phases };
process.stdout.write(`${JSON.stringify(result)}\n`);
