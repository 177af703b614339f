import { describe, expect, it } from "vitest";
import {
  DENIED_V4,
  cidrContains,
  egressRuleset,
  parseDestinations,
  parseProxy,
  proxyArgs,
  resolversFromResolvConf,
  restoreScript,
  subnetOf,
  workerServices,
  type EgressSpec,
} from "../src/egress/index.js";
import { DockerBuildEgress, effectiveMode } from "../src/egress/egress.js";
import { loadWorkerEnv } from "../src/env.js";

const spec: EgressSpec = {
  mode: "public",
  bridge: "br-0123456789ab",
  resolvers: ["10.255.255.53"],
  allow: [{ cidr: "10.1.2.3/32", port: 3141 }, { cidr: "10.9.0.0/16" }],
  deniedAddresses: ["10.1.2.3"],
  deniedLocalPorts: [6379],
  hostSubnets: ["192.0.2.0/24"],
};

describe("egress rules (pure)", () => {
  it("orders DNS, then the worker's services, then the allowlist, then the denied ranges, then the verdict", () => {
    const rules = egressRuleset(spec);
    expect(rules.forwardChain).toBe("M1L0-br-0123456789ab-F");
    expect(rules.inputChain).toBe("M1L0-br-0123456789ab-I");
    const forward = rules.forward.map((rule) => rule.replace(/ ?-m comment --comment "[^"]+"/, "").trim());
    expect(forward.slice(0, 5)).toEqual([
      "-d 10.255.255.53/32 -p udp --dport 53 -j RETURN",
      "-d 10.255.255.53/32 -p tcp --dport 53 -j RETURN",
      // a service address is refused even though an allowlist entry covers it
      "-d 10.1.2.3/32 -j REJECT --reject-with icmp-admin-prohibited",
      "-d 10.1.2.3/32 -p tcp --dport 3141 -j RETURN",
      "-d 10.9.0.0/16 -j RETURN",
    ]);
    for (const cidr of [...DENIED_V4, "192.0.2.0/24"]) expect(forward).toContain(`-d ${cidr} -j REJECT --reject-with icmp-admin-prohibited`);
    expect(forward.at(-1)).toBe("-j RETURN");
    const input = rules.input.map((rule) => rule.replace(/ ?-m comment --comment "[^"]+"/, "").trim());
    expect(input).toEqual([
      "-d 10.255.255.53/32 -p udp --dport 53 -j RETURN",
      "-d 10.255.255.53/32 -p tcp --dport 53 -j RETURN",
      "-p tcp --dport 6379 -j REJECT --reject-with icmp-admin-prohibited",
      "-d 10.1.2.3/32 -p tcp --dport 3141 -j RETURN",
      "-d 10.9.0.0/16 -j RETURN",
      "-j REJECT --reject-with icmp-admin-prohibited",
    ]);
    // every rule carries the version tag, and the version follows the content
    expect([...rules.forward, ...rules.input].every((rule) => rule.includes(`--comment "m1l0-egress ${rules.version}"`))).toBe(true);
    expect(egressRuleset({ ...spec, allow: [] }).version).not.toBe(rules.version);
    expect(egressRuleset(spec).version).toBe(rules.version);
  });

  it("refuses all IPv6 from the bridge and scopes every jump to it", () => {
    const { jumps } = egressRuleset(spec);
    expect(jumps.map((jump) => `${jump.family} ${jump.chain} ${jump.rule}`)).toEqual([
      '4 DOCKER-USER -i br-0123456789ab -m comment --comment "m1l0-egress br-0123456789ab" -j M1L0-br-0123456789ab-F',
      '4 INPUT -i br-0123456789ab -m comment --comment "m1l0-egress br-0123456789ab" -j M1L0-br-0123456789ab-I',
      '6 FORWARD -i br-0123456789ab -m comment --comment "m1l0-egress br-0123456789ab" -j REJECT --reject-with icmp6-adm-prohibited',
      '6 INPUT -i br-0123456789ab -m comment --comment "m1l0-egress br-0123456789ab" -j REJECT --reject-with icmp6-adm-prohibited',
    ]);
  });

  it("proxy mode: no DNS, everything not allowlisted refused", () => {
    const rules = egressRuleset({ ...spec, mode: "proxy", allow: [{ cidr: "10.0.0.9/32", port: 3128 }] });
    expect(rules.forward.some((rule) => rule.includes("--dport 53"))).toBe(false);
    expect(rules.forward.at(-1)).toMatch(/-j REJECT/);
    expect(rules.forward).toContainEqual(expect.stringMatching(/^-d 10\.0\.0\.9\/32 -p tcp --dport 3128 .* -j RETURN$/));
  });

  it("restore script replaces exactly our two chains", () => {
    const rules = egressRuleset(spec);
    const script = restoreScript(rules);
    expect(script.startsWith("*filter\n:M1L0-br-0123456789ab-F - [0:0]\n:M1L0-br-0123456789ab-I - [0:0]\n")).toBe(true);
    expect(script.trimEnd().endsWith("COMMIT")).toBe(true);
    expect(script.split("\n").filter((line) => line.startsWith("-A ")).every((line) => /^-A M1L0-br-0123456789ab-[FI] /.test(line))).toBe(true);
  });
});

describe("egress settings", () => {
  it("parses allow/deny entries and refuses IPv6 and malformed ones", () => {
    expect(parseDestinations(" 10.0.0.5:3141, 10.1.0.0/16 ,pypi.internal,index.corp:8080", "X")).toEqual([
      { host: "10.0.0.5", port: 3141, text: "10.0.0.5:3141" },
      { host: "10.1.0.0/16", text: "10.1.0.0/16" },
      { host: "pypi.internal", text: "pypi.internal" },
      { host: "index.corp", port: 8080, text: "index.corp:8080" },
    ]);
    expect(() => parseDestinations("[fd00::1]:80", "BUILD_EGRESS_ALLOW")).toThrow(/IPv6/);
    expect(() => parseDestinations("fd00::1", "BUILD_EGRESS_ALLOW")).toThrow(/IPv6/);
    expect(() => parseDestinations("10.0.0.0/33", "BUILD_EGRESS_ALLOW")).toThrow(/CIDR/);
    expect(() => parseDestinations("10.0.0.1:0", "BUILD_EGRESS_ALLOW")).toThrow(/host\[:port\]/);
    expect(() => parseDestinations("http://x", "BUILD_EGRESS_ALLOW")).toThrow(/host\[:port\]/);
  });

  it("proxy URL: http only; credentials go to the build args, never to the log line", () => {
    expect(parseProxy("http://user:secret@proxy.corp:3128")).toEqual({ url: "http://user:secret@proxy.corp:3128", host: "proxy.corp", port: 3128, display: "http://proxy.corp:3128" });
    expect(parseProxy("http://10.0.0.9").port).toBe(80);
    expect(() => parseProxy("https://proxy.corp")).toThrow(/http:\/\//);
    expect(() => parseProxy("proxy.corp:3128")).toThrow();
    expect(proxyArgs("http://p:1")).toEqual({ HTTP_PROXY: "http://p:1", HTTPS_PROXY: "http://p:1", http_proxy: "http://p:1", https_proxy: "http://p:1" });
  });

  it("reads the resolvers the daemon forwards to, leaving out loopback ones", () => {
    expect(resolversFromResolvConf("# x\nnameserver 10.255.255.53\nnameserver 127.0.0.53\nnameserver fd00::53\nsearch corp\nnameserver 10.255.255.53\n")).toEqual(["10.255.255.53"]);
  });

  it("IPv4 arithmetic", () => {
    expect(subnetOf("192.0.2.2", "255.255.255.0")).toBe("192.0.2.0/24");
    expect(subnetOf("10.254.253.1", "255.255.255.252")).toBe("10.254.253.0/30");
    expect(subnetOf("1.2.3.4", "255.255.255.255")).toBe("1.2.3.4/32");
    expect(cidrContains("172.16.0.0/12", "172.31.254.1")).toBe(true);
    expect(cidrContains("172.16.0.0/12", "172.32.0.1")).toBe(false);
    expect(cidrContains("169.254.0.0/16", "169.254.169.254/32")).toBe(true);
  });

  it("collects the worker's services from its environment", () => {
    const env = loadWorkerEnv({
      REDIS_URL: "redis://redis.internal:6380",
      S3_ENDPOINT: "https://minio.internal",
      REGISTRY_ALLOWLIST: "registry.corp:5000",
      REGISTRY_CREDENTIALS: "harbor.corp=bot:pw",
      DOCKERHUB_REGISTRY: "docker.io",
    });
    expect(workerServices(env)).toEqual([
      { name: "redis", host: "redis.internal", port: 6380 },
      { name: "s3", host: "minio.internal", port: 443 },
      { name: "registry", host: "registry.corp", port: 5000 },
      { name: "registry", host: "harbor.corp", port: 443 },
    ]);
  });

  it("defaults to public egress on the worker's own network; BUILD_NETWORK=none means mode none", () => {
    const env = loadWorkerEnv({});
    expect(env.BUILD_EGRESS).toBe("public");
    expect(env.BUILD_NETWORK).toBe("m1l0-build");
    expect(effectiveMode("public", "none")).toBe("none");
    expect(effectiveMode("proxy", "m1l0-build")).toBe("proxy");
    expect(() => loadWorkerEnv({ BUILD_EGRESS: "open" })).toThrow(/BUILD_EGRESS/);
    expect(() => loadWorkerEnv({ BUILD_EGRESS_DNS: "resolver.corp" })).toThrow(/BUILD_EGRESS_DNS/);
  });

  it("refuses to fence a network it does not own, and proxy mode without a proxy", () => {
    const base = { docker: {} as never, firewall: {} as never, allow: [], deny: [], services: [], resolvers: [], logger: {} as never };
    expect(() => new DockerBuildEgress({ ...base, mode: "public", network: "default" })).toThrow(/BUILD_EGRESS=unrestricted/);
    expect(() => new DockerBuildEgress({ ...base, mode: "public", network: "host" })).toThrow(/owns/);
    expect(() => new DockerBuildEgress({ ...base, mode: "proxy", network: "m1l0-build" })).toThrow(/BUILD_EGRESS_PROXY/);
    expect(new DockerBuildEgress({ ...base, mode: "unrestricted", network: "default" }).mode).toBe("unrestricted");
    expect(new DockerBuildEgress({ ...base, mode: "public", network: "none" }).mode).toBe("none");
  });
});
