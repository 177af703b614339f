import { BuilderError } from "@m1l0/config";
import { execFile, spawn } from "node:child_process";
import { chainNames, jumpComment, restoreScript, RULE_TAG, type Ruleset } from "./policy.js";

/** Port: the host's packet filter. The real one runs iptables/ip6tables; unit tests may fake it. */
export interface Firewall {
  /** runs `iptables` (4) or `ip6tables` (6) with these arguments; resolves stdout, rejects when it exits non-zero */
  run(family: 4 | 6, args: string[]): Promise<string>;
  /** feeds `iptables-restore --noflush` (only the chains the text declares are replaced, atomically) */
  restore(family: 4 | 6, text: string): Promise<void>;
}

/** iptables through exec (Debian's `iptables` package; nft or legacy backend alike). `-w` waits for the xtables lock other tools hold. */
export class IptablesFirewall implements Firewall {
  run(family: 4 | 6, args: string[]): Promise<string> {
    const command = family === 4 ? "iptables" : "ip6tables";
    return new Promise((resolve, reject) => {
      execFile(command, ["-w", "10", ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
        if (error) reject(Object.assign(new Error(`${command} ${args.join(" ")}: ${stderr.trim() || error.message}`, { cause: error }), { exitCode: error.code }));
        else resolve(stdout);
      });
    });
  }

  restore(family: 4 | 6, text: string): Promise<void> {
    const command = family === 4 ? "iptables-restore" : "ip6tables-restore";
    return new Promise((resolve, reject) => {
      const child = spawn(command, ["-w", "10", "--noflush"], { stdio: ["pipe", "ignore", "pipe"] });
      let stderr = "";
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
      child.on("error", (error) => {
        clearTimeout(timer);
        reject(new Error(`${command}: ${error.message}`, { cause: error }));
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        if (code === 0) resolve();
        else reject(new Error(`${command} --noflush exited ${code}: ${stderr.trim()}`));
      });
      child.stdin.end(text);
    });
  }
}

/** `iptables -S CHAIN` lines ("-A CHAIN …") that carry a comment starting with `comment`. */
function ownLines(listing: string, comment: string): string[] {
  return listing.split("\n").filter((line) => line.startsWith("-A ") && line.includes(`--comment "${comment}`));
}

async function list(firewall: Firewall, family: 4 | 6, chain?: string): Promise<string | undefined> {
  try {
    return await firewall.run(family, chain ? ["-S", chain] : ["-S"]);
  } catch {
    return undefined; // no such chain
  }
}

/** `-A CHAIN rest` → the argument vector of `-D CHAIN rest` (quotes of comments honoured). */
function deleteArgs(line: string): string[] {
  const words = line.match(/"[^"]*"|\S+/g) ?? [];
  return ["-D", ...words.slice(1).map((word) => word.replace(/^"(.*)"$/, "$1"))];
}

function ruleArgs(rule: string): string[] {
  return (rule.match(/"[^"]*"|\S+/g) ?? []).map((word) => word.replace(/^"(.*)"$/, "$1"));
}

export interface ReconcileResult {
  /** what had to be (re)written: empty when everything was in place */
  changed: string[];
}

/**
 * Makes the host hold exactly this ruleset for its bridge, touching nothing but our own rules:
 * our two chains are replaced atomically when their content is not the current version; each
 * jump must be the one rule of ours in its shared chain, at its top (Docker re-arranges
 * DOCKER-USER's own jump, never its content). Safe to run any number of times, from several
 * workers at once (they converge on the same rules when configured alike).
 */
export async function reconcile(firewall: Firewall, rules: Ruleset): Promise<ReconcileResult> {
  const changed: string[] = [];
  // one listing per family, read at once: every build waits for this check, and each iptables
  // run is a process of its own (5 ms here, more on a busy host); per chain it took seven
  const families = [...new Set<4 | 6>([4, ...rules.jumps.map((jump) => jump.family)])];
  const tables = new Map(await Promise.all(families.map(async (family) => [family, await readTable(firewall, family)] as const)));
  const v4 = tables.get(4) ?? new Map<string, string[]>();
  if (!v4.has("DOCKER-USER")) {
    throw new BuilderError(
      "EGRESS_POLICY_UNAVAILABLE",
      "the DOCKER-USER iptables chain does not exist: the Docker daemon on this host runs with --iptables=false (or iptables is not the host's firewall); build egress rules cannot be installed (set BUILD_EGRESS=none, or run a daemon that manages iptables)",
    );
  }
  const tag = `${RULE_TAG} ${rules.version}`;
  const upToDate = (lines: readonly string[], expected: number) => lines.length === expected && lines.every((line) => line.includes(`--comment "${tag}"`));
  if (!upToDate(v4.get(rules.forwardChain) ?? [], rules.forward.length) || !upToDate(v4.get(rules.inputChain) ?? [], rules.input.length)) {
    await firewall.restore(4, restoreScript(rules));
    changed.push(`chains ${rules.forwardChain}, ${rules.inputChain} (version ${rules.version})`);
  }
  // the restore replaces our own chains only: the shared chains' listings read above still hold
  for (const jump of rules.jumps) {
    const lines = tables.get(jump.family)?.get(jump.chain) ?? [];
    const comment = `--comment "${jumpComment(jumpBridge(jump.rule))}"`;
    const ours = lines.filter((line) => line.includes(comment));
    const position = lines.findIndex((line) => line.includes(comment));
    // ahead of every rule but other m1l0 jumps (those match other bridges: their order is irrelevant)
    const onTop = position >= 0 && lines.slice(0, position).every((line) => line.includes(`--comment "${RULE_TAG} `));
    const expected = `-A ${jump.chain} ${jump.rule}`;
    if (ours.length === 1 && onTop) continue;
    for (const line of ours) await firewall.run(jump.family, deleteArgs(line));
    await firewall.run(jump.family, ["-I", jump.chain, "1", ...ruleArgs(jump.rule)]);
    changed.push(`${jump.family === 4 ? "iptables" : "ip6tables"} ${jump.chain} jump${ours.length ? " (moved to the top)" : ""}: ${expected}`);
  }
  return { changed };
}

/**
 * A family's filter table (`iptables -S`) by chain: each chain's rules ("-A CHAIN …") in order,
 * an empty list for a chain without rules; a chain that does not exist is absent. A family
 * whose tool cannot list (ip6tables on a host without IPv6) reads as an empty table, as a
 * missing chain did before: the insert that follows says why.
 */
async function readTable(firewall: Firewall, family: 4 | 6): Promise<Map<string, string[]>> {
  const chains = new Map<string, string[]>();
  for (const line of ((await list(firewall, family)) ?? "").split("\n")) {
    const declared = /^-[NP] (\S+)/.exec(line);
    const rule = /^-A (\S+) /.exec(line);
    const chain = declared?.[1] ?? rule?.[1];
    if (!chain) continue;
    const rules = chains.get(chain) ?? [];
    if (rule) rules.push(line);
    chains.set(chain, rules);
  }
  return chains;
}

function jumpBridge(rule: string): string {
  return /-i (\S+)/.exec(rule)?.[1] ?? "";
}

/**
 * Removes every rule of ours for this bridge (its jumps, then its chains); with no bridge,
 * every m1l0-egress rule and M1L0- chain on the host. Rules of anyone else stay as they are.
 */
export async function removeRules(firewall: Firewall, bridge?: string): Promise<string[]> {
  const removed: string[] = [];
  const prefix = bridge ? jumpComment(bridge) : RULE_TAG;
  for (const family of [4, 6] as const) {
    for (const chain of family === 4 ? ["DOCKER-USER", "INPUT", "FORWARD"] : ["FORWARD", "INPUT"]) {
      const listing = await list(firewall, family, chain);
      if (!listing) continue;
      for (const line of ownLines(listing, prefix)) {
        if (bridge && !line.includes(`--comment "${prefix}"`)) continue;
        await firewall.run(family, deleteArgs(line));
        removed.push(`${family === 4 ? "iptables" : "ip6tables"} ${line}`);
      }
    }
  }
  const chains = bridge
    ? Object.values(chainNames(bridge))
    : ((await list(firewall, 4)) ?? "")
        .split("\n")
        .map((line) => /^-N (M1L0-\S+)$/.exec(line)?.[1])
        .filter((name): name is string => Boolean(name));
  for (const chain of chains) {
    if ((await list(firewall, 4, chain)) === undefined) continue;
    await firewall.run(4, ["-F", chain]);
    await firewall.run(4, ["-X", chain]);
    removed.push(`iptables chain ${chain}`);
  }
  return removed;
}
