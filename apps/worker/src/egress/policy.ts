import { createHash } from "node:crypto";
import { isIP } from "node:net";

/**
 * What RUN steps may reach (BUILD_EGRESS):
 * - `public`: the worker's own bridge network; special and private ranges, the daemon host's
 *   own addresses and the worker's services refused; DNS to the containers' resolvers and
 *   BUILD_EGRESS_ALLOW entries let through; every other (public) address reachable;
 * - `proxy`: the same network, but only the operator's HTTP proxy (and BUILD_EGRESS_ALLOW) is
 *   reachable, no DNS; the proxy reaches the steps as HTTP(S)_PROXY build args;
 * - `none`: network mode `none`, no interface but loopback;
 * - `unrestricted`: BUILD_NETWORK as it is, no rules (the behaviour before this policy).
 */
export const EGRESS_MODES = ["public", "none", "proxy", "unrestricted"] as const;
export type EgressMode = (typeof EGRESS_MODES)[number];

/** One IPv4 destination (a /32 or a CIDR), optionally a single TCP port. */
export interface Destination {
  cidr: string;
  port?: number;
}

/** A destination as the operator wrote it, host names resolved later (at every check). */
export interface DestinationSpec {
  /** an IPv4 address, an IPv4 CIDR or a host name */
  host: string;
  port?: number;
  text: string;
}

/** Ranges no build step may reach: "this network", private, CGNAT, loopback, link-local (cloud metadata), IETF protocol, benchmarking, multicast, reserved. */
export const DENIED_V4 = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "224.0.0.0/4",
  "240.0.0.0/4",
] as const;

/** Every rule we write carries this comment prefix, so we only ever touch our own rules. */
export const RULE_TAG = "m1l0-egress";

/** The complete policy of one build network, everything resolved to addresses. */
export interface EgressSpec {
  mode: "public" | "proxy";
  /** the network's bridge interface (rules match `-i <bridge>`) */
  bridge: string;
  /** IPv4 resolvers the daemon's embedded DNS forwards to (public mode only) */
  resolvers: string[];
  /** BUILD_EGRESS_ALLOW entries, resolved; in proxy mode the proxy too */
  allow: Destination[];
  /** the worker's own services elsewhere (Redis, S3, registries): refused on every port, before the allowlist */
  deniedAddresses: string[];
  /** TCP ports of the worker's services on the daemon host itself: refused on its addresses, before the allowlist */
  deniedLocalPorts: number[];
  /** subnets the daemon host is attached to that are not already in DENIED_V4 (its LAN, say 192.0.2.0/24) */
  hostSubnets: string[];
}

export interface Ruleset {
  /** chain jumped to from DOCKER-USER for traffic the containers send through the host */
  forwardChain: string;
  /** chain jumped to from INPUT for traffic the containers send to the host itself */
  inputChain: string;
  forward: string[];
  input: string[];
  /** jump rules placed at the top of shared chains (v4: DOCKER-USER and INPUT; v6: FORWARD and INPUT) */
  jumps: Array<{ family: 4 | 6; chain: string; rule: string }>;
  /** tag carried by every rule of this ruleset (changes whenever the rules change) */
  version: string;
}

const REJECT_V4 = "-j REJECT --reject-with icmp-admin-prohibited";
const REJECT_V6 = "-j REJECT --reject-with icmp6-adm-prohibited";

/** Chain names derive from the bridge (one policy per network; iptables allows 28 characters). */
export function chainNames(bridge: string): { forward: string; input: string } {
  const base = `M1L0-${bridge}`.slice(0, 26);
  return { forward: `${base}-F`, input: `${base}-I` };
}

/** The comment of the jump rules of one bridge: how we find and remove them. */
export function jumpComment(bridge: string): string {
  return `${RULE_TAG} ${bridge}`;
}

function destination(entry: Destination): string {
  return `-d ${entry.cidr}${entry.port ? ` -p tcp --dport ${entry.port}` : ""}`;
}

/**
 * The rules for one network, in iptables-save syntax (without the `-A CHAIN` prefix). Order
 * matters: DNS first (port 53 to the resolvers only, even when they sit in a private range),
 * then the worker's services (refused even if an allowlist entry covers them), then the
 * allowlist, then the denied ranges, then the mode's verdict on everything else.
 */
export function egressRuleset(spec: EgressSpec): Ruleset {
  const { forward: forwardChain, input: inputChain } = chainNames(spec.bridge);
  const body = JSON.stringify(spec);
  const version = createHash("sha256").update(body).digest("hex").slice(0, 12);
  const tag = `-m comment --comment "${RULE_TAG} ${version}"`;
  const dns = spec.mode === "public" ? spec.resolvers.flatMap((address) => [`-d ${address}/32 -p udp --dport 53`, `-d ${address}/32 -p tcp --dport 53`]) : [];
  const forward = [
    ...dns.map((match) => `${match} ${tag} -j RETURN`),
    ...spec.deniedAddresses.map((address) => `-d ${address}/32 ${tag} ${REJECT_V4}`),
    ...spec.allow.map((entry) => `${destination(entry)} ${tag} -j RETURN`),
    ...[...DENIED_V4, ...spec.hostSubnets].map((cidr) => `-d ${cidr} ${tag} ${REJECT_V4}`),
    // RETURN hands the packet back to Docker's own rules (isolation between networks, NAT)
    spec.mode === "public" ? `${tag} -j RETURN` : `${tag} ${REJECT_V4}`,
  ];
  // anything addressed to the daemon host itself (its bridge gateways, its LAN address, services
  // bound to 0.0.0.0) arrives on INPUT, not FORWARD: refused unless it is DNS or allowlisted
  const input = [
    ...dns.map((match) => `${match} ${tag} -j RETURN`),
    ...spec.deniedLocalPorts.map((port) => `-p tcp --dport ${port} ${tag} ${REJECT_V4}`),
    ...spec.allow.map((entry) => `${destination(entry)} ${tag} -j RETURN`),
    `${tag} ${REJECT_V4}`,
  ];
  const jumpTag = `-m comment --comment "${jumpComment(spec.bridge)}"`;
  const jumps: Ruleset["jumps"] = [
    { family: 4, chain: "DOCKER-USER", rule: `-i ${spec.bridge} ${jumpTag} -j ${forwardChain}` },
    { family: 4, chain: "INPUT", rule: `-i ${spec.bridge} ${jumpTag} -j ${inputChain}` },
    // the network has no IPv6 (EnableIPv6 false); these refuse whatever IPv6 a container still
    // sends (link-local included), to the host or through it
    { family: 6, chain: "FORWARD", rule: `-i ${spec.bridge} ${jumpTag} ${REJECT_V6}` },
    { family: 6, chain: "INPUT", rule: `-i ${spec.bridge} ${jumpTag} ${REJECT_V6}` },
  ];
  return { forwardChain, inputChain, forward, input, jumps, version };
}

/** `iptables-restore --noflush` input that creates or atomically replaces our two chains. */
export function restoreScript(rules: Ruleset): string {
  return [
    "*filter",
    `:${rules.forwardChain} - [0:0]`,
    `:${rules.inputChain} - [0:0]`,
    ...rules.forward.map((rule) => `-A ${rules.forwardChain} ${rule}`),
    ...rules.input.map((rule) => `-A ${rules.inputChain} ${rule}`),
    "COMMIT",
    "",
  ].join("\n");
}

// ---- IPv4 arithmetic ---------------------------------------------------------------

export function ipv4ToInt(address: string): number {
  const parts = address.split(".").map(Number);
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

function intToIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join(".");
}

export function parseCidr(text: string): { base: number; prefix: number } | undefined {
  const [address, prefixText] = text.split("/");
  if (!address || isIP(address) !== 4) return undefined;
  const prefix = prefixText === undefined ? 32 : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) return undefined;
  const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return { base: (ipv4ToInt(address) & mask) >>> 0, prefix };
}

/** `a.b.c.d/n` normalised to its network address ("10.1.2.3/8" → "10.0.0.0/8"). */
export function normaliseCidr(text: string): string | undefined {
  const parsed = parseCidr(text);
  return parsed ? `${intToIpv4(parsed.base)}/${parsed.prefix}` : undefined;
}

export function cidrContains(outer: string, inner: string): boolean {
  const a = parseCidr(outer);
  const b = parseCidr(inner);
  if (!a || !b || b.prefix < a.prefix) return false;
  const mask = a.prefix === 0 ? 0 : (0xffffffff << (32 - a.prefix)) >>> 0;
  return ((b.base & mask) >>> 0) === a.base;
}

export function isDeniedRange(address: string): boolean {
  return DENIED_V4.some((cidr) => cidrContains(cidr, address));
}

/** The subnet of an interface address: ("192.0.2.2", "255.255.255.0") → "192.0.2.0/24". */
export function subnetOf(address: string, netmask: string): string | undefined {
  if (isIP(address) !== 4 || isIP(netmask) !== 4) return undefined;
  // leading ones of the mask (255.255.255.0 → 24)
  const prefix = Math.clz32(~ipv4ToInt(netmask) >>> 0);
  return normaliseCidr(`${address}/${prefix}`);
}

// ---- operator input ----------------------------------------------------------------

/**
 * BUILD_EGRESS_ALLOW / BUILD_EGRESS_DENY: comma separated `host[:port]`, host an IPv4 address,
 * an IPv4 CIDR or a DNS name (resolved at every check). IPv6 is refused: the network has none.
 */
export function parseDestinations(text: string, variable: string): DestinationSpec[] {
  return text
    .split(",")
    .map((item) => item.trim())
    .filter(Boolean)
    .map((item) => {
      if (item.startsWith("[") || (item.match(/:/g)?.length ?? 0) > 1) {
        throw new Error(`${variable}: "${item}" is IPv6; build networks have no IPv6 (all IPv6 from them is refused)`);
      }
      const match = /^([A-Za-z0-9.-]+(?:\/\d{1,2})?)(?::(\d{1,5}))?$/.exec(item);
      const port = match?.[2] === undefined ? undefined : Number(match[2]);
      if (!match || (port !== undefined && (port < 1 || port > 65535))) {
        throw new Error(`${variable}: "${item}" is not host[:port] (host an IPv4 address, CIDR or name; port 1-65535)`);
      }
      const host = match[1]!;
      if (host.includes("/") && !parseCidr(host)) throw new Error(`${variable}: "${item}" is not a valid IPv4 CIDR`);
      return { host, ...(port !== undefined ? { port } : {}), text: item };
    });
}

/** BUILD_EGRESS_PROXY: `http://[user:pass@]host:port`; the URL goes to builds, the host:port into the rules. */
export function parseProxy(text: string): { url: string; host: string; port: number; display: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch (cause) {
    throw new Error(`BUILD_EGRESS_PROXY: "${text}" is not a URL like http://proxy.internal:3128`, { cause });
  }
  if (url.protocol !== "http:") throw new Error("BUILD_EGRESS_PROXY must be an http:// URL (HTTPS goes through it with CONNECT)");
  const port = url.port ? Number(url.port) : 80;
  const host = url.hostname;
  if (isIP(host) === 6 || host.startsWith("[")) throw new Error("BUILD_EGRESS_PROXY: build networks have no IPv6; give an IPv4 address or a name");
  return { url: text, host, port, display: `${url.protocol}//${host}:${port}` };
}

/** The IPv4 nameservers of a resolv.conf, loopback ones left out (the daemon does not forward to those). */
export function resolversFromResolvConf(text: string): string[] {
  const found = new Set<string>();
  for (const line of text.split("\n")) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    if (match && isIP(match[1]!) === 4 && !cidrContains("127.0.0.0/8", match[1]!)) found.add(match[1]!);
  }
  return [...found];
}
