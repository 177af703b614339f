import type { LookupAddress } from "node:dns";
import { describe, expect, it } from "vitest";
import { BuilderError } from "@m1l0/config";
import { fetchSource } from "../src/index.js";
import { NetworkGuard, classifyAddress, embeddedIpv4 } from "../src/network.js";
import { listTree, rejection, scratch } from "./helpers.js";

/** Hostile source URLs, each with the reason the refusal must name. */
const REFUSED_URLS: Array<[url: string, why: string]> = [
  ["https://127.0.0.1/r.git", "a loopback address"],
  ["https://127.0.0.1./r.git", "a loopback address"],
  ["https://127.255.255.254/r.git", "a loopback address"],
  ["https://2130706433/r.git", "a loopback address"], // decimal
  ["https://0177.0.0.1/r.git", "a loopback address"], // octal
  ["https://017700000001/r.git", "a loopback address"], // octal, one number
  ["https://0x7f.1/r.git", "a loopback address"], // hex, short
  ["https://0x7f000001/r.git", "a loopback address"], // hex, one number
  ["https://0x7f.0x0.0x0.0x1/r.git", "a loopback address"],
  ["https://127.1/r.git", "a loopback address"], // short
  ["https://127.0.1/r.git", "a loopback address"],
  ["https://127.000.000.001/r.git", "a loopback address"],
  ["https://①②⑦.0.0.1/r.git", "a loopback address"], // full-width digits, NFKC-normalised
  ["https://127。0。0。1/r.git", "a loopback address"], // ideographic full stops
  ["https://[::1]/r.git", "a loopback address"],
  ["https://[0:0:0:0:0:0:0:1]/r.git", "a loopback address"],
  ["https://[::ffff:127.0.0.1]/r.git", "a loopback address (inside the IPv6 address"],
  ["https://[0:0:0:0:0:ffff:7f00:1]/r.git", "a loopback address (inside the IPv6 address"],
  ["https://[64:ff9b::127.0.0.1]/r.git", "a loopback address (inside the IPv6 address"],
  ["https://[2002:7f00:1::]/r.git", "a loopback address (inside the IPv6 address"],
  ["https://[::127.0.0.1]/r.git", "an IPv4-compatible address"],
  ["https://localhost/r.git", "it is a loopback name"],
  ["https://LOCALHOST./r.git", "it is a loopback name"],
  ["https://git.localhost/r.git", "it is a loopback name"],
  ["https://0.0.0.0/r.git", "an unspecified address"],
  ["https://0/r.git", "an unspecified address"],
  ["https://[::]/r.git", "an unspecified address"],
  ["https://10.0.0.1/r.git", "a private address"],
  ["https://10.255.255.255/r.git", "a private address"],
  ["https://012.0.0.1/r.git", "a private address"], // octal 10.0.0.1
  ["https://172.16.0.1/r.git", "a private address"],
  ["https://172.31.255.255/r.git", "a private address"],
  ["https://192.168.0.1/r.git", "a private address"],
  ["https://3232235521/r.git", "a private address"], // decimal 192.168.0.1
  ["https://[fc00::1]/r.git", "a private (unique local) address"],
  ["https://[fd12:3456:789a::1]/r.git", "a private (unique local) address"],
  ["https://[::ffff:10.1.2.3]/r.git", "a private address (inside the IPv6 address"],
  ["https://169.254.169.254/latest/meta-data/", "a cloud metadata address"],
  ["https://0xa9fea9fe/latest/meta-data/", "a cloud metadata address"],
  ["https://2852039166/latest/meta-data/", "a cloud metadata address"],
  ["https://0251.0376.0251.0376/latest/", "a cloud metadata address"],
  ["https://[::ffff:169.254.169.254]/latest/", "a cloud metadata address (inside the IPv6 address"],
  ["https://[::ffff:a9fe:a9fe]/latest/", "a cloud metadata address (inside the IPv6 address"],
  ["https://[fd00:ec2::254]/latest/", "a cloud metadata address"],
  ["https://169.254.170.2/v2/credentials", "a cloud metadata address"],
  ["https://metadata.google.internal/computeMetadata/v1/", "it is a cloud metadata service"],
  ["https://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/", "it is a cloud metadata service"],
  ["https://169.254.1.1/r.git", "a link-local address"],
  ["https://[fe80::1]/r.git", "a link-local address"],
  ["https://100.64.0.1/r.git", "a carrier-grade NAT address"],
  ["https://100.127.255.255/r.git", "a carrier-grade NAT address"],
  ["https://224.0.0.1/r.git", "a multicast address"],
  ["https://255.255.255.255/r.git", "a reserved address"],
  ["https://[ff02::1]/r.git", "a multicast address"],
];

describe("source network policy: hostile hosts", () => {
  it.each(REFUSED_URLS)("refuses %s (%s) before touching the network or disk", async (url, why) => {
    const area = await scratch();
    try {
      const error = await rejection(fetchSource({ source: url, workDir: area.workDir, policy: { allowHttp: false, allowDir: false } }));
      expect(error.code).toBe("SOURCE_NOT_ALLOWED");
      expect(error.message).toContain(why);
      expect(error.message).toContain("SOURCE_HOST_ALLOWLIST");
      expect(await listTree(area.base)).toEqual(["a", "a/b", "a/b/work"]);
    } finally {
      await area.cleanup();
    }
  });

  it.each([
    ["8.8.8.8", undefined],
    ["1.1.1.1", undefined],
    ["172.32.0.1", undefined], // just outside 172.16/12
    ["100.128.0.1", undefined], // just outside 100.64/10
    ["169.255.0.1", undefined],
    ["2606:4700:4700::1111", undefined],
    ["::ffff:8.8.8.8", undefined],
    ["2002:0808:0808::1", undefined], // 6to4 of a public address
  ])("lets the public address %s through", (address, expected) => {
    expect(classifyAddress(address)).toEqual(expected);
    expect(() => new NetworkGuard().checkAddress(address, address)).not.toThrow();
  });

  it("decodes the IPv4 address inside mapped, NAT64 and 6to4 IPv6 addresses", () => {
    expect(embeddedIpv4("::ffff:7f00:1")).toBe("127.0.0.1");
    expect(embeddedIpv4("::ffff:127.0.0.1")).toBe("127.0.0.1");
    expect(embeddedIpv4("64:ff9b::a9fe:a9fe")).toBe("169.254.169.254");
    expect(embeddedIpv4("2002:c0a8:0101::")).toBe("192.168.1.1");
    expect(embeddedIpv4("2606:4700::1")).toBeUndefined();
  });

  it("lets allowlisted addresses and CIDRs through, and nothing next to them", () => {
    const guard = new NetworkGuard({ hostAllowlist: ["127.0.0.1/32", "10.1.0.0/16", "git.internal"] });
    expect(() => guard.checkUrlHost(new URL("http://127.0.0.1:8174/r.git"))).not.toThrow();
    expect(() => guard.checkUrlHost(new URL("http://[::ffff:127.0.0.1]/r.git"))).not.toThrow();
    expect(() => guard.checkUrlHost(new URL("http://10.1.200.3/r.git"))).not.toThrow();
    expect(() => guard.checkUrlHost(new URL("https://git.internal/r.git"))).not.toThrow();
    expect(() => guard.checkUrlHost(new URL("http://127.0.0.2/r.git"))).toThrow(/127\.0\.0\.2 is not allowed: a loopback address/);
    expect(() => guard.checkUrlHost(new URL("http://10.2.0.1/r.git"))).toThrow(/a private address/);
    expect(() => guard.checkUrlHost(new URL("http://[::1]/r.git"))).toThrow(/a loopback address/);
    expect(() => guard.checkUrlHost(new URL("https://metadata.google.internal/"))).toThrow(/cloud metadata/);
  });

  it("with ALLOW_PRIVATE_SOURCE_HOSTS lets private addresses through but still refuses cloud metadata", () => {
    const guard = new NetworkGuard({ allowPrivateHosts: true });
    expect(() => guard.checkUrlHost(new URL("https://10.0.0.1/r.git"))).not.toThrow();
    expect(() => guard.checkUrlHost(new URL("https://[::1]/r.git"))).not.toThrow();
    expect(() => guard.checkUrlHost(new URL("https://169.254.169.254/"))).toThrow(/cloud metadata address/);
    expect(() => guard.checkUrlHost(new URL("https://[fd00:ec2::254]/"))).toThrow(/cloud metadata address/);
    expect(() => guard.checkUrlHost(new URL("https://metadata.google.internal/"))).toThrow(/cloud metadata service/);
  });

  it("rejects an allowlist entry that is neither a name, an address nor a CIDR", () => {
    expect(() => new NetworkGuard({ hostAllowlist: ["10.0.0.0/33"] })).toThrow(BuilderError);
    expect(() => new NetworkGuard({ hostAllowlist: ["*.corp"] })).toThrow(/neither a host name/);
  });

  it("checks every address a name resolves to, at connect time (the lookup handed to http.request)", async () => {
    const guard = new NetworkGuard();
    const viaLookup = (options: { all: boolean }) =>
      new Promise<string | LookupAddress[]>((resolve, reject) =>
        guard.lookup("localhost", options, (error, address) => (error ? reject(error) : resolve(address))),
      );
    for (const options of [{ all: true }, { all: false }]) {
      const error = await viaLookup(options).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(BuilderError);
      expect((error as BuilderError).code).toBe("SOURCE_NOT_ALLOWED");
      expect((error as BuilderError).message).toMatch(/source host localhost is not allowed: it resolves to (127\.0\.0\.1|::1), a loopback address/);
    }
    const allowed = new NetworkGuard({ hostAllowlist: ["127.0.0.0/8", "::1"] });
    const addresses = await allowed.resolveChecked("localhost");
    expect(addresses.map((entry) => entry.address)).toContain("127.0.0.1");
  });
});
