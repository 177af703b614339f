import dns, { type LookupAddress, type LookupAllOptions, type LookupOneOptions } from "node:dns";
import { BlockList, isIP } from "node:net";
import { BuilderError } from "@m1l0/config";

/** Where a source host may point: checked for the URL's host and again for the address actually connected to. */
export interface NetworkPolicy {
  /** skip the private/loopback/link-local refusal (cloud metadata stays refused unless allowlisted) */
  allowPrivateHosts?: boolean;
  /** hosts (exact names), addresses or CIDRs allowed even when they are private, e.g. 127.0.0.0/8 for tests */
  hostAllowlist?: readonly string[];
}

type Family = "ipv4" | "ipv6";

interface Range {
  cidr: string;
  why: string;
  /** refused even when ALLOW_PRIVATE_SOURCE_HOSTS is set */
  metadata?: boolean;
}

// Cloud metadata endpoints come first so they are reported as such, not as "link-local".
const RANGES: Range[] = [
  { cidr: "169.254.169.254/32", why: "a cloud metadata address", metadata: true },
  { cidr: "169.254.170.2/32", why: "a cloud metadata address", metadata: true },
  { cidr: "fd00:ec2::254/128", why: "a cloud metadata address", metadata: true },
  { cidr: "0.0.0.0/8", why: "an unspecified address" },
  { cidr: "10.0.0.0/8", why: "a private address" },
  { cidr: "100.64.0.0/10", why: "a carrier-grade NAT address" },
  { cidr: "127.0.0.0/8", why: "a loopback address" },
  { cidr: "169.254.0.0/16", why: "a link-local address" },
  { cidr: "172.16.0.0/12", why: "a private address" },
  { cidr: "192.0.0.0/24", why: "a reserved address" },
  { cidr: "192.168.0.0/16", why: "a private address" },
  { cidr: "198.18.0.0/15", why: "a reserved address" },
  { cidr: "224.0.0.0/4", why: "a multicast address" },
  { cidr: "240.0.0.0/4", why: "a reserved address" },
  { cidr: "::/128", why: "an unspecified address" },
  { cidr: "::1/128", why: "a loopback address" },
  // IPv4-compatible (deprecated) and Teredo addresses hide an IPv4 address we would rather not decode
  { cidr: "::/96", why: "an IPv4-compatible address" },
  { cidr: "2001::/32", why: "a Teredo address" },
  { cidr: "fc00::/7", why: "a private (unique local) address" },
  { cidr: "fe80::/10", why: "a link-local address" },
  { cidr: "fec0::/10", why: "a site-local address" },
  { cidr: "ff00::/8", why: "a multicast address" },
];

const METADATA_HOSTNAMES = new Set(["metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"]);

function splitCidr(text: string): { address: string; prefix: number; family: Family } | undefined {
  const [address = "", prefixText] = text.trim().replace(/^\[|\]$/g, "").split("/");
  const version = isIP(address);
  if (version === 0) return undefined;
  const family: Family = version === 4 ? "ipv4" : "ipv6";
  const max = version === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return undefined;
  return { address, prefix, family };
}

function blockListOf(cidr: string): BlockList {
  const parsed = splitCidr(cidr);
  if (!parsed) throw new Error(`invalid CIDR ${cidr}`);
  const list = new BlockList();
  list.addSubnet(parsed.address, parsed.prefix, parsed.family);
  return list;
}

const COMPILED = RANGES.map((range) => ({ ...range, list: blockListOf(range.cidr) }));

function ipv6Words(address: string): number[] | undefined {
  // expand "a::b" and a trailing dotted IPv4 into eight 16-bit words
  let text = address.toLowerCase().replace(/%.*$/, "");
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dotted?.[1]) {
    const bytes = dotted[1].split(".").map(Number);
    text = text.slice(0, -dotted[1].length) + `${(((bytes[0] ?? 0) << 8) | (bytes[1] ?? 0)).toString(16)}:${(((bytes[2] ?? 0) << 8) | (bytes[3] ?? 0)).toString(16)}`;
  }
  const [head = "", tail] = text.split("::");
  const headWords = head ? head.split(":") : [];
  const tailWords = tail ? tail.split(":") : [];
  const fill = tail === undefined ? 0 : 8 - headWords.length - tailWords.length;
  const words = [...headWords, ...Array<string>(Math.max(fill, 0)).fill("0"), ...tailWords].map((word) => parseInt(word, 16));
  return words.length === 8 && words.every((word) => Number.isInteger(word) && word >= 0 && word <= 0xffff) ? words : undefined;
}

/** The IPv4 address an IPv6 address carries: IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) or 6to4 (2002::/16). */
export function embeddedIpv4(address: string): string | undefined {
  const words = ipv6Words(address);
  if (!words) return undefined;
  const v4 = (high: number, low: number) => `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
  const zeros = (from: number, to: number) => words.slice(from, to).every((word) => word === 0);
  if (zeros(0, 5) && words[5] === 0xffff) return v4(words[6]!, words[7]!);
  if (words[0] === 0x64 && words[1] === 0xff9b && zeros(2, 6)) return v4(words[6]!, words[7]!);
  if (words[0] === 0x2002) return v4(words[1]!, words[2]!);
  return undefined;
}

/** Why an address may not be fetched from (undefined when it is a public address), ignoring any allowlist. */
export function classifyAddress(address: string): { why: string; metadata: boolean } | undefined {
  const bare = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const version = isIP(bare);
  if (version === 0) return { why: "not an IP address", metadata: false };
  const family: Family = version === 4 ? "ipv4" : "ipv6";
  if (family === "ipv6") {
    const inner = embeddedIpv4(bare);
    if (inner !== undefined) {
      const verdict = classifyAddress(inner);
      return verdict && { why: `${verdict.why} (inside the IPv6 address ${bare})`, metadata: verdict.metadata };
    }
  }
  for (const range of COMPILED) {
    if (range.list.check(bare, family)) return { why: range.why, metadata: range.metadata === true };
  }
  return undefined;
}

/** Compiled allowlist: exact hostnames plus address ranges. */
export class HostAllowlist {
  private readonly names = new Set<string>();
  private readonly ranges = new BlockList();

  constructor(entries: readonly string[] = []) {
    for (const raw of entries) {
      const entry = raw.trim().toLowerCase();
      if (!entry) continue;
      const cidr = splitCidr(entry);
      if (cidr) {
        this.ranges.addSubnet(cidr.address, cidr.prefix, cidr.family);
        const inner = cidr.family === "ipv6" ? embeddedIpv4(cidr.address) : undefined;
        if (inner && cidr.prefix === 128) this.ranges.addAddress(inner, "ipv4");
      } else if (/^[a-z0-9.-]+$/.test(entry)) {
        this.names.add(entry.replace(/\.$/, ""));
      } else {
        throw new BuilderError("VALIDATION_FAILED", `source host allowlist entry '${raw}' is neither a host name, an address nor a CIDR`);
      }
    }
  }

  allowsName(hostname: string): boolean {
    return this.names.has(hostname.toLowerCase().replace(/\.$/, ""));
  }

  allowsAddress(address: string): boolean {
    const bare = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
    const version = isIP(bare);
    if (version === 0) return false;
    if (this.ranges.check(bare, version === 4 ? "ipv4" : "ipv6")) return true;
    const inner = version === 6 ? embeddedIpv4(bare) : undefined;
    return inner !== undefined && this.ranges.check(inner, "ipv4");
  }
}

function refused(host: string, detail: string): BuilderError {
  return new BuilderError(
    "SOURCE_NOT_ALLOWED",
    `source host ${host} is not allowed: ${detail}; builds may only fetch from public addresses (an operator can allowlist it with SOURCE_HOST_ALLOWLIST)`,
  );
}

/** The checks one fetch applies to every host it talks to. */
export class NetworkGuard {
  private readonly allowlist: HostAllowlist;

  constructor(private readonly policy: NetworkPolicy = {}) {
    this.allowlist = new HostAllowlist(policy.hostAllowlist);
  }

  /** Throws SOURCE_NOT_ALLOWED for an address this policy refuses. `host` names it in the message. */
  checkAddress(host: string, address: string): void {
    if (this.allowlist.allowsAddress(address)) return;
    const verdict = classifyAddress(address);
    if (!verdict) return;
    if (verdict.metadata || !this.policy.allowPrivateHosts) {
      const shown = host.replace(/^\[|\]$/g, "") === address.replace(/^\[|\]$/g, "") ? verdict.why : `it resolves to ${address}, ${verdict.why}`;
      throw refused(host, shown);
    }
  }

  /**
   * Checks a URL's host without the network when it is an address literal (the WHATWG URL
   * parser already turned 2130706433, 0177.0.0.1, 0x7f.1 and 127.1 into 127.0.0.1) or a
   * refused name; names are otherwise checked by `lookup` when a connection is made.
   */
  checkUrlHost(url: URL): void {
    const hostname = url.hostname.toLowerCase();
    const bare = hostname.replace(/^\[|\]$/g, "");
    if (isIP(bare)) return this.checkAddress(bare, bare);
    if (this.allowlist.allowsName(bare)) return;
    const name = bare.replace(/\.$/, "");
    if (METADATA_HOSTNAMES.has(name)) throw refused(bare, "it is a cloud metadata service");
    if (!this.policy.allowPrivateHosts && (name === "localhost" || name.endsWith(".localhost"))) throw refused(bare, "it is a loopback name");
  }

  /** Resolves `hostname` (every address) and checks them all: a host with any refused address is refused. */
  async resolveChecked(hostname: string): Promise<LookupAddress[]> {
    const bare = hostname.replace(/^\[|\]$/g, "");
    const version = isIP(bare);
    if (version !== 0) {
      this.checkAddress(bare, bare);
      return [{ address: bare, family: version }];
    }
    if (this.allowlist.allowsName(bare)) return dns.promises.lookup(bare, { all: true });
    let addresses: LookupAddress[];
    try {
      addresses = await dns.promises.lookup(bare, { all: true, verbatim: true });
    } catch (cause) {
      throw new BuilderError("SOURCE_FETCH_FAILED", `could not resolve git server ${bare}: ${(cause as Error).message}`, { cause, retryable: true });
    }
    for (const { address } of addresses) this.checkAddress(bare, address);
    return addresses;
  }

  /**
   * A `lookup` for http.request: the connection goes to exactly the addresses that were
   * checked, so a DNS answer that changes between the check and the connect (rebinding)
   * cannot reach a refused address.
   */
  readonly lookup = (
    hostname: string,
    options: LookupOneOptions | LookupAllOptions | number | undefined,
    callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
  ): void => {
    const wantsAll = typeof options === "object" && options !== null && options.all === true;
    const family = typeof options === "number" ? options : typeof options === "object" && options !== null ? options.family : undefined;
    this.resolveChecked(hostname).then(
      (addresses) => {
        const usable = family === 4 || family === 6 ? addresses.filter((entry) => entry.family === family) : addresses;
        const first = usable[0];
        if (wantsAll) return callback(null, usable);
        if (!first) return callback(Object.assign(new Error(`no IPv${family ?? ""} address for ${hostname}`), { code: "ENOTFOUND" }), "", undefined);
        callback(null, first.address, first.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, "", undefined),
    );
  };
}
