import Docker from "dockerode";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import pino from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { createBuildEgress, type DockerBuildEgress } from "../src/egress/index.js";
import { loadWorkerEnv } from "../src/env.js";

/**
 * The build network on the real daemon: created with inter-container traffic off and no IPv6,
 * refused when someone made it with ICC on, and recreated (with its rules moved to the new
 * bridge) as soon as the daemon reports it destroyed — with no periodic check running.
 */
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const network = `m1l0-egress-net-${randomBytes(4).toString("hex")}`;
const logger = pino({ level: "silent" });
let egress: DockerBuildEgress | undefined;

const rulesOf = (bridge: string) =>
  ["iptables-save", "ip6tables-save"].flatMap((command) => execFileSync(command).toString().split("\n")).filter((line) => line.includes(bridge));

type NetworkView = { Id: string; EnableIPv6: boolean; Options: Record<string, string>; Labels: Record<string, string> };

async function inspect(name: string): Promise<NetworkView | undefined> {
  return (docker.getNetwork(name).inspect() as Promise<NetworkView>).catch(() => undefined);
}

afterAll(async () => {
  egress?.stop();
  await egress?.remove().catch(() => undefined);
  await docker.getNetwork(network).remove().catch(() => undefined);
  await docker.getNetwork(`${network}-icc`).remove().catch(() => undefined);
  for (const info of await docker.listNetworks({ filters: JSON.stringify({ name: [`${network}-dup`] }) })) await docker.getNetwork(info.Id).remove().catch(() => undefined);
});

describe("the build network", () => {
  it("is created fenced, and recreated with its rules when the daemon reports it destroyed", async () => {
    egress = createBuildEgress(loadWorkerEnv({ BUILD_NETWORK: network, BUILD_EGRESS_DNS: "10.255.255.53" }), docker, logger);
    const prepared = await egress.start(0); // no periodic check: only the daemon's events can bring it back
    expect(prepared).toMatchObject({ mode: "public", networkMode: network });
    const first = await inspect(network);
    expect(first?.Options["com.docker.network.bridge.enable_icc"]).toBe("false");
    expect(first?.EnableIPv6).toBe(false);
    expect(first?.Labels["dev.m1l0.egress"]).toBe("build");
    const oldBridge = `br-${first!.Id.slice(0, 12)}`;
    expect(egress.bridge).toBe(oldBridge);
    expect(rulesOf(oldBridge).length).toBeGreaterThan(0);

    await docker.getNetwork(network).remove();
    const deadline = Date.now() + 30_000;
    let again = await inspect(network);
    while (!again || again.Id === first!.Id || egress.bridge === oldBridge) {
      if (Date.now() > deadline) throw new Error("the network was not recreated within 30 s of its destroy event");
      await new Promise((resolve) => setTimeout(resolve, 200));
      again = await inspect(network);
    }
    const newBridge = `br-${again.Id.slice(0, 12)}`;
    expect(egress.bridge).toBe(newBridge);
    expect(rulesOf(newBridge).some((line) => line.includes("DOCKER-USER"))).toBe(true);
    expect(rulesOf(oldBridge)).toEqual([]);
  });

  it("two workers sharing a daemon agree on one network when the name was created twice", async () => {
    // what two workers starting at once leave: the daemon's duplicate check is not atomic
    const name = `${network}-dup`;
    const options = { Name: name, Driver: "bridge", Options: { "com.docker.network.bridge.enable_icc": "false" }, Labels: { "dev.m1l0.egress": "build" } };
    await docker.createNetwork(options);
    await docker.createNetwork({ ...options, CheckDuplicate: false });
    const env = loadWorkerEnv({ BUILD_NETWORK: name, BUILD_EGRESS_DNS: "10.255.255.53" });
    const [a, b] = [createBuildEgress(env, docker, logger), createBuildEgress(env, docker, logger)];
    try {
      const prepared = await Promise.all([a.prepare(), b.prepare()]);
      expect(prepared.map((entry) => entry.networkMode)).toEqual([name, name]);
      const left = (await docker.listNetworks({ filters: JSON.stringify({ name: [name] }) })).filter((info) => info.Name === name);
      expect(left).toHaveLength(1);
      expect([a.bridge, b.bridge]).toEqual([`br-${left[0]!.Id.slice(0, 12)}`, `br-${left[0]!.Id.slice(0, 12)}`]);
    } finally {
      await a.remove().catch(() => undefined);
    }
  });

  it("refuses a network of that name that lets containers talk to each other", async () => {
    await docker.createNetwork({ Name: `${network}-icc`, Driver: "bridge" });
    const loose = createBuildEgress(loadWorkerEnv({ BUILD_NETWORK: `${network}-icc` }), docker, logger);
    await expect(loose.prepare()).rejects.toMatchObject({ code: "EGRESS_POLICY_UNAVAILABLE", message: expect.stringContaining("enable_icc=false") });
  });
});
