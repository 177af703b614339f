import { execFileSync } from "node:child_process";
import { firewallSnapshot } from "@m1l0/testkit";
import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { IptablesFirewall, egressRuleset, reconcile, removeRules, type EgressSpec, type Firewall } from "../src/egress/index.js";

/**
 * The rules on the host's real iptables (nft or legacy backend), for a bridge name no interface
 * has: they match no packet, so the shared machine's traffic is untouched, yet every iptables
 * operation the worker performs is real. Other engineers' tests change the tables meanwhile, so
 * comparisons look at our lines (and at the whole table with theirs left out).
 */
const firewall = new IptablesFirewall();
const bridge = `m1l0t${randomBytes(4).toString("hex")}`;
const other = `m1l0t${randomBytes(4).toString("hex")}`;

const spec = (overrides: Partial<EgressSpec> = {}): EgressSpec => ({
  mode: "public",
  bridge,
  resolvers: ["10.255.255.53"],
  allow: [{ cidr: "10.254.254.2/32" }],
  deniedAddresses: [],
  deniedLocalPorts: [6379],
  hostSubnets: [],
  ...overrides,
});


const mentions = (name: string) => (line: string) => line.includes(name);
/**
 * Lines other tests may add or remove meanwhile (their docker networks and containers, other
 * workers' egress rules): a rule naming another interface, another bridge's M1L0 chain, or a
 * docker chain other than DOCKER-USER (whose own lines are compared exactly).
 */
const foreign = (line: string) => {
  if (line.includes(bridge) || line.includes(other)) return false;
  const interfaces = [...line.matchAll(/\s-[io] (\S+)/g)].map((match) => match[1]);
  if (interfaces.some((name) => name !== "lo")) return true;
  return /M1L0-|m1l0-egress/.test(line) || /^\S+ (-A |:)DOCKER(?!-USER\b)/.test(line);
};

afterAll(async () => {
  await removeRules(firewall, bridge).catch(() => undefined);
  await removeRules(firewall, other).catch(() => undefined);
});

describe("egress rules on the host's iptables", () => {
  it("installs once, is idempotent, repairs what others removed, and removal leaves the tables as they were", async () => {
    const before = firewallSnapshot();
    expect(before.filter(mentions(bridge))).toEqual([]);
    const rules = egressRuleset(spec());

    const first = await reconcile(firewall, rules);
    expect(first.changed.length).toBe(5); // the two chains (one restore) and four jumps
    const installed = firewallSnapshot();
    expect(installed.filter(mentions(`M1L0-${bridge}-F`)).length).toBe(1 + rules.forward.length + 1); // -N, the rules, the DOCKER-USER jump
    expect(installed.filter((line) => line.startsWith("ip6tables") && line.includes(bridge)).length).toBe(2);
    // our jump is the first rule of DOCKER-USER and of INPUT
    expect(execFileSync("iptables", ["-S", "DOCKER-USER"]).toString().split("\n")[1]).toContain(`-i ${bridge} `);
    expect(execFileSync("iptables", ["-S", "INPUT"]).toString().split("\n").find((line) => line.startsWith("-A"))).toContain(`-i ${bridge} `);

    // idempotent: nothing to do, nothing changed; and the check every build waits for reads one listing per family
    const runs: string[] = [];
    const counting: Firewall = {
      run: (family, args) => (runs.push(`${family} ${args.join(" ")}`), firewall.run(family, args)),
      restore: (family, text) => (runs.push(`${family} restore`), firewall.restore(family, text)),
    };
    expect((await reconcile(counting, rules)).changed).toEqual([]);
    expect(runs.sort()).toEqual(["4 -S", "6 -S"]);
    expect(firewallSnapshot().filter(mentions(bridge))).toEqual(installed.filter(mentions(bridge)));

    // another bridge's jump on top of ours is not a reason to move (no ping-pong between workers)
    const otherRules = egressRuleset(spec({ bridge: other }));
    await reconcile(firewall, otherRules);
    expect((await reconcile(firewall, rules)).changed).toEqual([]);
    await removeRules(firewall, other);

    // someone flushed our chain and deleted a jump (a firewall reload, say): put back
    execFileSync("iptables", ["-w", "10", "-F", rules.forwardChain]);
    execFileSync("ip6tables", ["-w", "10", "-D", "INPUT", "-i", bridge, "-m", "comment", "--comment", `m1l0-egress ${bridge}`, "-j", "REJECT", "--reject-with", "icmp6-adm-prohibited"]);
    const repaired = await reconcile(firewall, rules);
    expect(repaired.changed).toHaveLength(2);
    expect(firewallSnapshot().filter(mentions(bridge)).sort()).toEqual(installed.filter(mentions(bridge)).sort());

    // a changed policy replaces the chain's content in place (one atomic restore), jumps stay
    const changed = egressRuleset(spec({ allow: [] }));
    expect((await reconcile(firewall, changed)).changed).toEqual([`chains ${changed.forwardChain}, ${changed.inputChain} (version ${changed.version})`]);
    expect(execFileSync("iptables", ["-S", changed.forwardChain]).toString()).not.toContain("10.254.254.2");

    const removed = await removeRules(firewall, bridge);
    expect(removed.filter((line) => line.includes("chain"))).toEqual([`iptables chain ${rules.forwardChain}`, `iptables chain ${rules.inputChain}`]);
    const after = firewallSnapshot();
    expect(after.filter(mentions(bridge))).toEqual([]);
    expect({ gone: before.filter((line) => !after.includes(line) && !foreign(line)), added: after.filter((line) => !before.includes(line) && !foreign(line)) }).toEqual({ gone: [], added: [] });
    expect(await removeRules(firewall, bridge)).toEqual([]);
  });
});
