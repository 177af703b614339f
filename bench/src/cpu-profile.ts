import { readFileSync } from "node:fs";
import path from "node:path";

/** The parts of a V8 .cpuprofile (node --cpu-prof) that self time needs. */
interface CpuProfile {
  nodes: Array<{ id: number; hitCount?: number; callFrame: { functionName: string; url: string; lineNumber: number } }>;
  samples?: number[];
  timeDeltas?: number[];
  startTime: number;
  endTime: number;
}

export interface SelfTime {
  /** function (file:line) or a V8 pseudo-frame such as (garbage collector) */
  name: string;
  ms: number;
  share: number;
}

/** Where a function lives, short: the package and file for dependencies, the file for our code. */
function place(url: string): string {
  if (!url) return "";
  const packages = /node_modules\/(?:\.pnpm\/[^/]+\/node_modules\/)?((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(url);
  if (packages) return `${packages[1]}/${packages[2]}`;
  if (url.startsWith("node:")) return url;
  return path.basename(url);
}

/** Functions by self time (time spent in the function itself, not its callees), largest first. */
export function topSelfTime(file: string, count: number): SelfTime[] {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byNode = new Map(profile.nodes.map((node) => [node.id, node]));
  const totals = new Map<string, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  samples.forEach((id, index) => {
    const frame = byNode.get(id)?.callFrame;
    if (!frame) return;
    const where = place(frame.url);
    const name = `${frame.functionName || "(anonymous)"}${where ? ` ${where}:${frame.lineNumber + 1}` : ""}`;
    // a sample's time is the delta to the next sample
    totals.set(name, (totals.get(name) ?? 0) + (deltas[index + 1] ?? 0) / 1000);
  });
  const totalMs = (profile.endTime - profile.startTime) / 1000;
  return [...totals.entries()]
    .sort(([, left], [, right]) => right - left)
    .slice(0, count)
    .map(([name, ms]) => ({ name, ms, share: totalMs > 0 ? ms / totalMs : 0 }));
}
