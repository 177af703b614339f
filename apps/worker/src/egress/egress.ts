import { BuilderError } from "@m1l0/config";
import type Docker from "dockerode";
import { readFile } from "node:fs/promises";
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import type { Logger } from "pino";
import { reconcile, removeRules, type Firewall } from "./firewall.js";
import {
  cidrContains,
  egressRuleset,
  isDeniedRange,
  parseCidr,
  resolversFromResolvConf,
  subnetOf,
  type Destination,
  type DestinationSpec,
  type EgressMode,
  type EgressSpec,
  type Ruleset,
} from "./policy.js";

/** What one build runs under: the daemon's network mode, build args, and the line its log states. */
export interface EgressPreparation {
  mode: EgressMode;
  networkMode: string;
  buildArgs?: Record<string, string>;
  description: string;
}

/** Port the pipeline sees: asked once per build, right before the daemon is. */
export interface BuildEgress {
  prepare(): Promise<EgressPreparation>;
}

/**
 * A network mode given outright, with no rules of ours: for builders that run nothing on a
 * daemon (the fake in unit tests, a worker started with an injected builder).
 */
export class FixedNetworkEgress implements BuildEgress {
  constructor(private readonly networkMode: string) {}

  prepare(): Promise<EgressPreparation> {
    const mode: EgressMode = this.networkMode === "none" ? "none" : "unrestricted";
    return Promise.resolve({ mode, networkMode: this.networkMode, description: `egress: network mode ${this.networkMode} (no egress policy of ours)` });
  }
}

/** A service of the worker (Redis, S3, a registry) that builds must not reach. */
export interface ServiceEndpoint {
  name: string;
  host: string;
  port: number;
}

export interface EgressOptions {
  mode: EgressMode;
  /** BUILD_NETWORK: the network the worker owns (public, proxy) or uses as it is (unrestricted) */
  network: string;
  docker: Docker;
  firewall: Firewall;
  allow: DestinationSpec[];
  deny: DestinationSpec[];
  services: ServiceEndpoint[];
  /** BUILD_EGRESS_DNS; empty → the nameservers of resolvConfPath (what the daemon forwards to) */
  resolvers: string[];
  resolvConfPath?: string;
  proxy?: { url: string; host: string; port: number; display: string };
  /** `external`: the deployment installs the rules (`egress install` from a privileged step); the worker only uses the network */
  rules?: "worker" | "external";
  logger: Logger;
}

const RESERVED_NETWORKS = new Set(["default", "bridge", "host", "none"]);
export const NETWORK_LABEL = "dev.m1l0.egress";

/** The network mode string → mode a build runs under, before anything is asked of the daemon. */
export function effectiveMode(mode: EgressMode, network: string): EgressMode {
  return network === "none" ? "none" : mode;
}

export class DockerBuildEgress implements BuildEgress {
  readonly mode: EgressMode;
  #bridge: string | undefined;
  #installed: Ruleset | undefined;
  #running: Promise<EgressPreparation> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #events: EventStream | undefined;
  #watching = false;

  constructor(private readonly options: EgressOptions) {
    this.mode = effectiveMode(options.mode, options.network);
    if ((this.mode === "public" || this.mode === "proxy") && (RESERVED_NETWORKS.has(options.network) || options.network.startsWith("container:"))) {
      throw new Error(
        `BUILD_EGRESS=${this.mode} needs a build network the worker owns, not "${options.network}": set BUILD_NETWORK to a name for it (default m1l0-build), BUILD_NETWORK=none, or BUILD_EGRESS=unrestricted to build on "${options.network}" without any egress rules`,
      );
    }
    if (this.mode === "proxy" && !options.proxy) throw new Error("BUILD_EGRESS=proxy needs BUILD_EGRESS_PROXY (http://host:port of the operator's proxy)");
  }

  /** the bridge interface of the build network, once known */
  get bridge(): string | undefined {
    return this.#bridge;
  }

  async prepare(): Promise<EgressPreparation> {
    if (this.mode === "none") return { mode: "none", networkMode: "none", description: "egress none: RUN steps have no network (network mode none)" };
    if (this.mode === "unrestricted") {
      return {
        mode: "unrestricted",
        networkMode: this.options.network,
        description: `egress unrestricted: RUN steps use network "${this.options.network}" with no egress rules (they reach whatever this host reaches)`,
      };
    }
    // one check at a time; a build that arrives while one runs shares its answer
    this.#running ??= this.#ensure().finally(() => (this.#running = undefined));
    return this.#running;
  }

  /**
   * Installs (or repairs) the network and its rules now, then every `intervalMs`, and at once
   * when the daemon reports the network destroyed or comes back after its event stream broke
   * (a daemon restart).
   */
  async start(intervalMs: number): Promise<EgressPreparation> {
    if (this.mode === "public" || this.mode === "proxy") {
      // the timer first: a first check that fails (daemon still starting) is retried too
      if (intervalMs > 0 && !this.#timer) {
        this.#timer = setInterval(() => this.#check(), intervalMs);
        this.#timer.unref();
      }
      if (!this.#watching) void this.#watch();
    }
    return this.prepare();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#watching = false;
    this.#events?.destroy?.();
    this.#events = undefined;
  }

  #check(): void {
    this.prepare().catch((error: Error) => this.options.logger.error({ err: error }, "build egress check failed; builds fail until the rules are back"));
  }

  /** Follows the daemon's events for our network; a broken stream (daemon restart) is reopened and followed by a check. */
  async #watch(): Promise<void> {
    this.#watching = true;
    let connected = false;
    while (this.#watching) {
      const stream = (await this.options.docker.getEvents({ filters: { type: ["network"], network: [this.options.network] } }).catch(() => undefined)) as EventStream | undefined;
      if (stream && this.#watching) {
        this.#events = stream;
        if (connected) this.#check(); // the daemon is back: its restart may have dropped rules or the network
        connected = true;
        await new Promise<void>((resolve) => {
          stream.on("data", (chunk: Buffer) => {
            if (/"Action":"destroy"/.test(chunk.toString())) this.#check();
          });
          stream.once("end", resolve);
          stream.once("error", resolve);
          stream.once("close", resolve);
        });
        this.#events = undefined;
      } else {
        stream?.destroy?.();
      }
      if (this.#watching) await new Promise((resolve) => setTimeout(resolve, 1_000).unref());
    }
  }

  /** Removes this network's rules (the network itself stays; `docker network rm` removes it). */
  async remove(): Promise<string[]> {
    this.stop();
    const bridge = this.#bridge ?? (await this.#findBridge());
    return bridge ? removeRules(this.options.firewall, bridge) : [];
  }

  async #ensure(): Promise<EgressPreparation> {
    let rules: Ruleset;
    let spec: EgressSpec;
    try {
      const bridge = await this.#ensureNetwork();
      spec = await this.#spec(bridge);
      rules = egressRuleset(spec);
      // with external rules the worker cannot see iptables (no root): it trusts the deployment
      const { changed } = this.options.rules === "external" ? { changed: [] } : await reconcile(this.options.firewall, rules);
      if (changed.length > 0) {
        const repaired = this.#installed !== undefined && this.#installed.version === rules.version;
        (repaired ? this.options.logger.warn.bind(this.options.logger) : this.options.logger.info.bind(this.options.logger))(
          { bridge, changed },
          repaired ? "build egress rules were missing or moved (daemon restart, firewall reload?): restored" : "build egress rules installed",
        );
      }
      if (this.#bridge && this.#bridge !== bridge) {
        // the network was recreated: the old bridge's rules match nothing any more
        await removeRules(this.options.firewall, this.#bridge).catch(() => undefined);
      }
      this.#bridge = bridge;
      this.#installed = rules;
    } catch (cause) {
      if (cause instanceof BuilderError) throw cause;
      const message = (cause as Error).message ?? String(cause);
      // iptables failures are almost always permissions; anything else is the daemon's answer
      const hint = /^(ip6?tables)/.test(message) ? " (the worker needs root, CAP_NET_ADMIN, in its daemon's host network namespace; or BUILD_EGRESS_RULES=external with `egress install` run by the deployment)" : "";
      throw new BuilderError("EGRESS_POLICY_UNAVAILABLE", `the build network ${this.options.network} or its egress rules could not be checked or installed${hint}: ${message}`, { cause });
    }
    const description = describe(this.mode, this.options, spec) + (this.options.rules === "external" ? " (rules installed by the deployment, not checked by the worker)" : "");
    return { mode: this.mode, networkMode: this.options.network, ...(this.mode === "proxy" ? { buildArgs: proxyArgs(this.options.proxy!.url) } : {}), description };
  }

  async #findBridge(): Promise<string | undefined> {
    try {
      return bridgeOf((await this.options.docker.getNetwork(this.options.network).inspect()) as NetworkInfo);
    } catch {
      return undefined;
    }
  }

  /**
   * The build network by name, after workers sharing this daemon raced to create it: the
   * daemon's CheckDuplicate is not atomic, so two creates can both succeed and the name then
   * matches two networks (every lookup by name fails as ambiguous). Every worker keeps the
   * oldest (then the lowest id) and removes the others, so all of them agree on one.
   */
  async #oneNetwork(): Promise<NetworkInfo> {
    const network = this.options.network;
    const listed = (await this.options.docker.listNetworks({ filters: JSON.stringify({ name: [network] }) })) as NetworkInfo[];
    const named = listed.filter((candidate) => candidate.Name === network).sort((a, b) => (a.Created ?? "").localeCompare(b.Created ?? "") || a.Id.localeCompare(b.Id));
    const [keep, ...duplicates] = named;
    if (!keep) throw new Error(`build network "${network}" was created but cannot be found`);
    for (const duplicate of duplicates) {
      // gone already when another worker removed it first
      await this.options.docker
        .getNetwork(duplicate.Id)
        .remove()
        .catch(() => undefined);
      this.options.logger.warn({ network, removed: duplicate.Id, kept: keep.Id }, "removed a duplicate build network another worker created at the same time");
    }
    return (await this.options.docker.getNetwork(keep.Id).inspect()) as NetworkInfo;
  }

  /** The build network, created when missing: a bridge, no IPv6, no traffic between its containers. */
  async #ensureNetwork(): Promise<string> {
    const network = this.options.network;
    let info: NetworkInfo | undefined = await (this.options.docker.getNetwork(network).inspect() as Promise<NetworkInfo>).catch((error: { statusCode?: number; message?: string }) => {
      if (error.statusCode === 404) return undefined;
      // duplicates from an earlier race (see #oneNetwork)
      if (/ambiguous/.test(error.message ?? "")) return this.#oneNetwork();
      throw error;
    });
    if (!info) {
      await this.options.docker
        .createNetwork({
          Name: network,
          Driver: "bridge",
          CheckDuplicate: true,
          EnableIPv6: false,
          Options: { "com.docker.network.bridge.enable_icc": "false" },
          Labels: { [NETWORK_LABEL]: "build" },
        })
        .catch((error: { statusCode?: number }) => {
          if (error.statusCode !== 409) throw error; // another worker on this daemon made it first
        });
      info = await this.#oneNetwork();
      this.options.logger.info({ network, bridge: bridgeOf(info) }, "created the build network");
    }
    if (info.Driver !== "bridge") throw new Error(`build network "${network}" exists with driver ${info.Driver}; it must be a bridge network (remove it and let the worker create it)`);
    if (info.Options?.["com.docker.network.bridge.enable_icc"] !== "false") {
      throw new Error(`build network "${network}" exists with traffic between containers allowed; remove it (docker network rm ${network}) and let the worker create it with com.docker.network.bridge.enable_icc=false`);
    }
    return bridgeOf(info);
  }

  async #spec(bridge: string): Promise<EgressSpec> {
    const { options } = this;
    const resolvers = options.resolvers.length > 0 ? options.resolvers : resolversFromResolvConf(await readFile(options.resolvConfPath ?? "/etc/resolv.conf", "utf8").catch(() => ""));
    const allowSpecs = [...options.allow, ...(this.mode === "proxy" && options.proxy ? [{ host: options.proxy.host, port: options.proxy.port, text: options.proxy.display }] : [])];
    const allow = (await Promise.all(allowSpecs.map((entry) => resolveDestination(entry)))).flat();
    const local = localAddresses();
    const deniedAddresses = new Set<string>();
    const deniedLocalPorts = new Set<number>();
    for (const entry of options.deny) for (const found of await resolveDestination(entry)) if (parseCidr(found.cidr)) deniedAddresses.add(found.cidr.replace(/\/32$/, ""));
    for (const service of options.services) {
      for (const address of await resolveHost(service.host).catch(() => [])) {
        // a service on this host (loopback or one of its addresses) is reached through INPUT: refuse its port there
        if (cidrContains("127.0.0.0/8", address) || local.has(address)) deniedLocalPorts.add(service.port);
        else deniedAddresses.add(address);
      }
    }
    const hostSubnets = new Set<string>();
    for (const [name, addresses] of Object.entries(networkInterfaces())) {
      if (name === bridge) continue;
      for (const address of addresses ?? []) {
        if (address.family !== "IPv4" || address.internal) continue;
        const subnet = subnetOf(address.address, address.netmask);
        // a very wide prefix would be a routing oddity, not a LAN: leave it to the public verdict
        if (subnet && Number(subnet.split("/")[1]) >= 8 && !isDeniedRange(subnet)) hostSubnets.add(subnet);
      }
    }
    return {
      mode: this.mode as "public" | "proxy",
      bridge,
      resolvers,
      allow,
      deniedAddresses: [...deniedAddresses].filter((address) => isIP(address) === 4).sort(),
      deniedLocalPorts: [...deniedLocalPorts].sort((a, b) => a - b),
      hostSubnets: [...hostSubnets].sort(),
    };
  }
}

type EventStream = NodeJS.ReadableStream & { destroy?: () => void };

interface NetworkInfo {
  Id: string;
  Name?: string;
  Created?: string;
  Driver?: string;
  Options?: Record<string, string>;
}

function bridgeOf(info: NetworkInfo): string {
  return info.Options?.["com.docker.network.bridge.name"] || `br-${info.Id.slice(0, 12)}`;
}

function localAddresses(): Set<string> {
  return new Set(Object.values(networkInterfaces()).flatMap((list) => (list ?? []).filter((entry) => entry.family === "IPv4").map((entry) => entry.address)));
}

async function resolveHost(host: string): Promise<string[]> {
  if (isIP(host) === 4) return [host];
  const found = await lookup(host, { all: true, family: 4 });
  return [...new Set(found.map((entry) => entry.address))];
}

async function resolveDestination(entry: DestinationSpec): Promise<Destination[]> {
  const port = entry.port !== undefined ? { port: entry.port } : {};
  if (entry.host.includes("/")) return [{ cidr: entry.host, ...port }];
  const addresses = await resolveHost(entry.host).catch((cause: Error) => {
    throw new Error(`cannot resolve "${entry.text}": ${cause.message}`, { cause });
  });
  return addresses.map((address) => ({ cidr: `${address}/32`, ...port }));
}

/** Docker's predefined proxy args (not recorded in the image's history), both spellings tools read. */
export function proxyArgs(url: string): Record<string, string> {
  return { HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url };
}

function describe(mode: EgressMode, options: EgressOptions, spec: EgressSpec): string {
  const allowed = options.allow.map((entry) => entry.text);
  const where = `network ${options.network} (bridge ${spec.bridge})`;
  if (mode === "proxy") {
    return `egress proxy: ${where}; only the HTTP proxy ${options.proxy!.display} (passed as HTTP_PROXY/HTTPS_PROXY)${allowed.length ? ` and ${allowed.join(", ")}` : ""} reachable; no DNS`;
  }
  return [
    `egress public: ${where}`,
    "refused: private, loopback, link-local (cloud metadata), CGNAT, multicast and reserved ranges, this host's own addresses and networks, IPv6, the worker's services",
    `DNS to ${spec.resolvers.join(", ") || "the daemon's resolvers"}`,
    ...(allowed.length ? [`allowed: ${allowed.join(", ")}`] : []),
    "other (public) addresses reachable",
  ].join("; ");
}
