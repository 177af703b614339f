import { execFileSync } from "node:child_process";

/** iptables-save and ip6tables-save without counters: what "the host's iptables" means in a test. */
export function firewallSnapshot(): string[] {
  return ["iptables-save", "ip6tables-save"].flatMap((command) =>
    execFileSync(command)
      .toString()
      .split("\n")
      .filter((line) => line && !line.startsWith("#"))
      .map((line) => `${command} ${line.replace(/\[\d+:\d+\]/, "[0:0]")}`),
  );
}
