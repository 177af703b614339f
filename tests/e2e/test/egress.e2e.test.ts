import { startPackageIndex, type PackageIndex } from "@m1l0/bench";
import { withDeadline } from "@m1l0/config";
import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TARGETS, startEgressTargets, startHostListeners, type EgressTargets } from "../src/egress-targets.js";
import { firewallSnapshot } from "@m1l0/testkit";
import { ROOT_DIR, bridgeOf, createGitFixture, gatewayOf, getLog, services, startStack, submit, waitForBuild, type RunningStack } from "../src/index.js";

/**
 * The build egress policy on the real daemon and the host's real iptables. Every address a
 * build step tries exists only on this machine (see egress-targets.ts): a network namespace
 * holding the metadata, private and stand-in public addresses, and listeners on this host's own
 * addresses (the default bridge's gateway, the build network's gateway, the LAN address).
 */
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const run = Date.now().toString(36);
const network = `m1l0-e2e-egress-${run}`;
const proxyNetwork = `m1l0-e2e-egressp-${run}`;
const emptyDir = mkdtempSync(path.join(tmpdir(), "m1l0-empty-"));
const indexDir = mkdtempSync(path.join(tmpdir(), "m1l0-egress-index-"));
const cleanups: Array<() => Promise<void> | void> = [];
const helperName = `m1l0-egress-helper-${run}`;

let targets: EgressTargets;
let index: PackageIndex;
let stack: RunningStack;
let hostPort: number;
let dockerGateway: string;
let buildGateway: string;
let lanAddress: string | undefined;
let before: string[];
const bridges = new Set<string>();


async function waitForNetwork(name: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (!(await docker.getNetwork(name).inspect().then(() => true, () => false))) {
    if (Date.now() > deadline) throw new Error(`the worker did not create network ${name} within 60 s:\n${stack?.logs.join("\n")}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** The address of the interface the default route uses (this host's LAN address), if any. */
function defaultRouteAddress(): string | undefined {
  const device = /\bdev (\S+)/.exec(execFileSync("ip", ["-4", "route", "show", "default"]).toString())?.[1];
  return device ? networkInterfaces()[device]?.find((entry) => entry.family === "IPv4")?.address : undefined;
}

/** An HTTP GET (direct, or through the proxy the build args name) or a DNS lookup (the daemon's embedded DNS, or a given server). */
type Probe = { name: string; url: string; viaProxy?: boolean } | { name: string; lookup: string; server?: string };

const PYTHON = process.env.BASE_IMAGE_PYTHON ?? "m1l0-local/python:3.11-bookworm";

/**
 * The probe a RUN step runs (Python: Debian's static busybox wget crashes): each probe prints
 * one line `probe <name>: <body or error>`, and the script always exits 0.
 */
function probeScript(probes: Probe[], marker: string): string {
  return String.raw`# ${marker}
import json, random, socket, struct, urllib.request
PROBES = json.loads(${JSON.stringify(JSON.stringify(probes))})
def get(url, via_proxy):
    handlers = [] if via_proxy else [urllib.request.ProxyHandler({})]
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=5) as answer:
            return answer.read(300).decode(errors="replace")
    except Exception as error:
        return "error %s: %s" % (type(error).__name__, getattr(error, "reason", error))
def query(name, server):
    # one A query over UDP, the answer's addresses
    ident = random.randrange(65536)
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(part)]) + part.encode() for part in name.split(".")) + b"\0\0\1\0\1"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    try:
        sock.sendto(packet, (server, 53))
        data = sock.recv(512)
    except Exception as error:
        return "error %s: %s" % (type(error).__name__, error)
    count = struct.unpack(">H", data[6:8])[0]
    return "answers %d %s" % (count, ".".join(str(byte) for byte in data[-4:]) if count else "")
def lookup(name):
    try:
        return "resolved " + " ".join(sorted({entry[4][0] for entry in socket.getaddrinfo(name, 80, socket.AF_INET)}))
    except Exception as error:
        return "error %s: %s" % (type(error).__name__, error)
for probe in PROBES:
    if "url" in probe:
        result = get(probe["url"], probe.get("viaProxy", False))
    elif probe.get("server"):
        result = query(probe["lookup"], probe["server"])
    else:
        result = lookup(probe["lookup"])
    print("probe %s: %s" % (probe["name"], " ".join(result.split())), flush=True)
`;
}

function probed(log: string, name: string): string {
  // output lines only ("<time> [build] probe …" in a build log, bare in a container's)
  const match = new RegExp(`^(?:\\S+ \\[\\w+\\] )?probe ${name}: (.*)$`, "m").exec(log);
  if (!match) throw new Error(`the step printed no result for ${name}:\n${log.slice(-3000)}`);
  return match[1]!.trim();
}

async function probeBuild(target: RunningStack, marker: string, probes: Probe[]): Promise<{ log: string; status: string }> {
  const fixture = createGitFixture(emptyDir, { Dockerfile: `FROM ${PYTHON}\nCOPY probe.py /probe.py\nRUN python3 /probe.py\n`, "probe.py": probeScript(probes, `${run}-${marker}`) });
  cleanups.push(fixture.cleanup);
  const id = await submit(target.apiUrl, { service: "dockerhub", repository: "m1l0/e2e-egress", revision: `${run}-${marker}`, source: fixture.url, dockerfile: "Dockerfile" });
  const record = await waitForBuild(target.apiUrl, id);
  const log = await getLog(target.apiUrl, id);
  expect(record.error, log + target.logs.join("\n")).toBeUndefined();
  return { log, status: record.status };
}

const denied = (): Probe[] => [
  { name: "metadata-v4", url: `http://${TARGETS.metadataV4}/latest/meta-data/iam/security-credentials/` },
  { name: "metadata-v6", url: `http://[${TARGETS.metadataV6}]/latest/meta-data/` },
  { name: "private-10", url: `http://${TARGETS.private10}/` },
  { name: "private-172", url: `http://${TARGETS.private172}/` },
  { name: "private-192", url: `http://${TARGETS.private192}/` },
  { name: "cgnat-100", url: `http://${TARGETS.cgnat}/` },
  { name: "resolver-port-80", url: `http://${TARGETS.resolver}/` },
  { name: "denied-service", url: `http://${TARGETS.publicDenied}/` },
  { name: "docker0-gateway", url: `http://${dockerGateway}:${hostPort}/` },
  { name: "build-gateway", url: `http://${buildGateway}:${hostPort}/` },
  ...(lanAddress ? [{ name: "host-lan", url: `http://${lanAddress}:${hostPort}/` }] : []),
  { name: "other-container", url: `http://egress-helper:8080/` },
];
const allowed = (): Probe[] => [
  { name: "allowlisted", url: `http://${TARGETS.allowlisted}/` },
  { name: "public", url: `http://${TARGETS.public}/` },
  { name: "index", url: index.url },
];
const dnsChecks: Probe[] = [
  { name: "dns-upstream", lookup: "probe.egress.test", server: TARGETS.resolver },
  { name: "dns-embedded", lookup: "egress-helper" },
];

beforeAll(async () => {
  before = firewallSnapshot();
  targets = await startEgressTargets();
  cleanups.push(() => targets.close());
  dockerGateway = await gatewayOf("bridge");
  lanAddress = defaultRouteAddress();
  index = await startPackageIndex(indexDir, dockerGateway, { iterations: 1_000, dataBytes: 0 });
  cleanups.push(() => index.close());
  stack = await startStack({
    concurrency: 1,
    workerEnv: {
      BUILD_NETWORK: network,
      BUILD_EGRESS: "public",
      // a private address, a "public" one that BUILD_EGRESS_DENY overrides, and the package index on the bridge gateway (its port only)
      BUILD_EGRESS_ALLOW: `${TARGETS.allowlisted},${TARGETS.publicDenied},${new URL(index.url).host}`,
      BUILD_EGRESS_DENY: TARGETS.publicDenied,
      // the resolver the test controls (a private address): DNS must reach it, nothing else there may
      BUILD_EGRESS_DNS: TARGETS.resolver,
      BUILD_EGRESS_CHECK_SECONDS: "1",
    },
  });
  await waitForNetwork(network);
  bridges.add(await bridgeOf(network));
  buildGateway = await gatewayOf(network);
  const listeners = await startHostListeners([dockerGateway, buildGateway, ...(lanAddress ? [lanAddress] : [])]);
  hostPort = listeners.port;
  cleanups.push(() => listeners.close());
  // another container on the build network, for inter-container traffic and the daemon's embedded DNS
  const helper = await docker.createContainer({
    name: helperName,
    Image: services.baseImageBusybox,
    Cmd: ["busybox", "httpd", "-f", "-p", "8080", "-h", "/"],
    HostConfig: { NetworkMode: network, AutoRemove: false },
    NetworkingConfig: { EndpointsConfig: { [network]: { Aliases: ["egress-helper"] } } },
  });
  cleanups.push(() => helper.remove({ force: true }).catch(() => undefined));
  await helper.start();
}, 300_000);

afterAll(async () => {
  await stack?.stop();
  // idempotent: the last test removes the rules through the documented command already
  for (const name of [network, proxyNetwork]) {
    try {
      execFileSync(process.execPath, [path.join(ROOT_DIR, "apps/worker/dist/main.js"), "egress", "remove"], { env: { PATH: process.env.PATH, BUILD_NETWORK: name, LOG_LEVEL: "silent" }, stdio: "ignore" });
    } catch {
      // network gone
    }
  }
  for (const cleanup of cleanups.reverse()) await cleanup();
  for (const name of [network, proxyNetwork]) await docker.getNetwork(name).remove().catch(() => undefined);
  rmSync(emptyDir, { recursive: true, force: true });
  rmSync(indexDir, { recursive: true, force: true });
});

describe("build egress policy (BUILD_EGRESS)", () => {
  it("without the policy the targets are reachable (control: a container on the default bridge)", async () => {
    const probes = [...denied().filter((probe) => !["other-container", "build-gateway", "metadata-v6"].includes(probe.name)), ...allowed()];
    const container = await docker.createContainer({ Image: PYTHON, Cmd: ["python3", "-c", probeScript(probes, "control")], Tty: true, HostConfig: { NetworkMode: "bridge" } });
    try {
      await container.start();
      await container.wait();
      const output = (await container.logs({ stdout: true, stderr: true })).toString("utf8");
      console.log(`egress probe results (control, default bridge, no policy):\n${probes.map((probe) => `  ${probe.name}: ${probed(output, probe.name)}`).join("\n")}`);
      for (const probe of probes) expect(probed(output, probe.name), probe.name).toContain(probe.name === "index" ? "m1l0-bench-deps" : "m1l0-egress-reached");
    } finally {
      await container.remove({ force: true });
    }
    // the IPv6 metadata stand-in answers too (from the host: the default bridge has no IPv6)
    const viaHost = await withDeadline({ timeoutMs: 10_000 }, (signal) => fetch(`http://[${TARGETS.metadataV6}]/`, { signal }).then((response) => response.text()));
    expect(viaHost).toContain(`m1l0-egress-reached ${TARGETS.metadataV6}`);
  });

  it("a custom Dockerfile's RUN step cannot connect to any denied target, reaches the allowlisted and public ones, and resolves names", async () => {
    const { log } = await probeBuild(stack, "probe", [...denied(), ...allowed(), ...dnsChecks]);
    expect(log).toMatch(/egress public: network m1l0-e2e-egress-\S+ \(bridge br-[0-9a-f]+\)/);
    const results = Object.fromEntries([...denied(), ...allowed(), ...dnsChecks].map((probe) => [probe.name, probed(log, probe.name)]));
    console.log(`egress probe results (BUILD_EGRESS=public):\n${Object.entries(results).map(([name, text]) => `  ${name}: ${text}`).join("\n")}`);
    for (const probe of denied()) {
      expect(results[probe.name], probe.name).not.toContain("m1l0-egress-reached");
      // the connection itself failed (REJECT → "No route to host"; no IPv6 address on the network → "Cannot assign requested address")
      expect(results[probe.name], probe.name).toMatch(/^error URLError: \[Errno \d+\] (No route to host|Network is unreachable|Cannot assign requested address)/);
    }
    for (const probe of allowed()) expect(results[probe.name], probe.name).toContain(probe.name === "index" ? "m1l0-bench-deps" : "m1l0-egress-reached");
    // DNS: the resolver in a private range answers (port 53 only: its port 80 is refused above), and the daemon's embedded DNS names the other container
    expect(results["dns-upstream"]).toBe(`answers 1 ${TARGETS.public}`);
    expect(results["dns-embedded"]).toMatch(/^resolved \d+\.\d+\.\d+\.\d+$/);
  });

  it("the generated Dockerfile's pip install reaches the allowlisted package index", async () => {
    const fixture = createGitFixture(emptyDir, { "main.py": 'import m1l0_bench_deps\nprint("deps", m1l0_bench_deps.CHAIN[:8])\n', "requirements.txt": `# egress ${run}\n${index.requirements}` });
    cleanups.push(fixture.cleanup);
    const id = await submit(stack.apiUrl, { service: "dockerhub", repository: "m1l0/e2e-egress-pip", revision: run, source: fixture.url, framework: "python", pyversion: "3.11", resource: "cpu", entry: "main.py" });
    const record = await waitForBuild(stack.apiUrl, id);
    const log = await getLog(stack.apiUrl, id);
    expect(record.error, log + stack.logs.join("\n")).toBeUndefined();
    expect(record.status).toBe("succeeded");
    expect(log).toContain("egress public:");
    expect(log).toMatch(/Successfully installed m1l0-bench-deps-1\.0/);
  });

  it("puts the rules back when they disappear (a daemon restart or firewall reload) and builds stay fenced", async () => {
    const bridge = [...bridges][0]!;
    const chain = `M1L0-${bridge}-F`;
    const jump = ["-i", bridge, "-m", "comment", "--comment", `m1l0-egress ${bridge}`, "-j", chain];
    execFileSync("iptables", ["-w", "10", "-D", "DOCKER-USER", ...jump]);
    execFileSync("iptables", ["-w", "10", "-F", chain]); // our own chain: nobody else's rules are in it
    const deadline = Date.now() + 30_000;
    for (;;) {
      const userChain = execFileSync("iptables", ["-w", "10", "-S", "DOCKER-USER"]).toString();
      const ours = execFileSync("iptables", ["-w", "10", "-S", chain]).toString();
      // the worker restores the rules first and logs it after: its line may reach us a moment later than the rules do
      const logged = stack.logs.some((line) => line.includes("build egress rules were missing or moved"));
      if (userChain.includes(`-j ${chain}`) && ours.includes("169.254.0.0/16") && logged) break;
      if (Date.now() > deadline) throw new Error(`the worker did not restore its rules and say so within 30 s (rules back: ${userChain.includes(`-j ${chain}`)}, logged: ${logged}):\n${stack.logs.slice(-20).join("\n")}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    const { log } = await probeBuild(stack, "after-restore", [denied()[0]!, allowed()[1]!]);
    expect(probed(log, "metadata-v4")).not.toContain("m1l0-egress-reached");
    expect(probed(log, "public")).toContain(`m1l0-egress-reached ${TARGETS.public}`);
  });

  it("proxy mode: only the operator's proxy (given as HTTP_PROXY) is reachable, no DNS; none mode: no network", async () => {
    const proxyStack = await startStack({
      concurrency: 1,
      workerEnv: { BUILD_NETWORK: proxyNetwork, BUILD_EGRESS: "proxy", BUILD_EGRESS_PROXY: `http://${TARGETS.proxy}:3128`, BUILD_EGRESS_DNS: TARGETS.resolver },
    });
    const noneStack = await startStack({ concurrency: 1, workerEnv: { BUILD_EGRESS: "none" } });
    try {
      const probes: Probe[] = [
        { name: "via-proxy", url: `http://${TARGETS.public}/`, viaProxy: true },
        { name: "direct", url: `http://${TARGETS.public}/` },
        { name: "metadata-v4", url: `http://${TARGETS.metadataV4}/` },
        { name: "dns-upstream", lookup: "probe.egress.test", server: TARGETS.resolver },
      ];
      const proxied = await probeBuild(proxyStack, "proxy", probes);
      bridges.add(await bridgeOf(proxyNetwork));
      expect(proxied.log).toContain(`egress proxy: network ${proxyNetwork}`);
      expect(probed(proxied.log, "via-proxy")).toContain(`m1l0-egress-reached ${TARGETS.public}`);
      expect(probed(proxied.log, "direct")).not.toContain("m1l0-egress-reached");
      expect(probed(proxied.log, "direct")).toMatch(/No route to host/);
      expect(probed(proxied.log, "metadata-v4")).toMatch(/No route to host/);
      expect(probed(proxied.log, "dns-upstream")).toMatch(/^error /);
      // the proxy itself decides what it fetches (here it would fetch anything): the operator's to restrict
      console.log(`egress probe results (BUILD_EGRESS=proxy):\n${["via-proxy", "direct", "metadata-v4", "dns-upstream"].map((name) => `  ${name}: ${probed(proxied.log, name)}`).join("\n")}`);

      const isolated = await probeBuild(noneStack, "none", [
        { name: "public", url: `http://${TARGETS.public}/` },
        { name: "metadata-v4", url: `http://${TARGETS.metadataV4}/` },
      ]);
      expect(isolated.log).toContain("egress none: RUN steps have no network");
      expect(probed(isolated.log, "public")).not.toContain("m1l0-egress-reached");
      expect(probed(isolated.log, "metadata-v4")).not.toContain("m1l0-egress-reached");
      console.log(`egress probe results (BUILD_EGRESS=none):\n  public: ${probed(isolated.log, "public")}\n  metadata-v4: ${probed(isolated.log, "metadata-v4")}`);
    } finally {
      await Promise.all([proxyStack.stop(), noneStack.stop()]);
    }
  });

  it("`egress remove` leaves the host's iptables as it was before the worker started", async () => {
    await stack.stop();
    await docker.getContainer(helperName).remove({ force: true });
    for (const name of [network, proxyNetwork]) {
      const output = execFileSync(process.execPath, [path.join(ROOT_DIR, "apps/worker/dist/main.js"), "egress", "remove"], { env: { PATH: process.env.PATH, BUILD_NETWORK: name, LOG_LEVEL: "silent" } }).toString();
      expect(output).toContain("removed iptables chain M1L0-");
      await docker.getNetwork(name).remove();
    }
    const after = firewallSnapshot();
    // every rule the worker installs names its network's bridge (chains M1L0-<bridge>-…, comments "m1l0-egress <bridge>")
    const ours = (line: string) => [...bridges].some((bridge) => line.includes(bridge));
    expect(after.filter(ours)).toEqual([]);
    // other engineers' networks and containers come and go on this shared daemon meanwhile, and other
    // tests' workers (layouts.e2e) fence their own build networks: their lines are not ours to compare.
    // A leftover rule of ours that named no bridge would still show up in `added`.
    const others = (line: string) => /\b(br-[0-9a-f]{12}|docker0|veth\w+)\b/.test(line) && !ours(line);
    const gone = before.filter((line) => !after.includes(line) && !others(line));
    const added = after.filter((line) => !before.includes(line) && !others(line));
    expect({ gone, added }).toEqual({ gone: [], added: [] });
  });
});
