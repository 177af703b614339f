import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";

/**
 * Addresses for egress tests that exist only on this machine: a network namespace the test
 * makes, joined to the host by a veth pair, holding the cloud metadata addresses, private and
 * CGNAT addresses and stand-ins for public ones, with host routes (/32, /128) pointing at it.
 * A build container's packet to 169.254.169.254 is routed by the host into this namespace,
 * exactly as it would go to a cloud's metadata service, and never leaves the machine.
 *
 * Inside it, one Node process answers HTTP on port 80 of every address ("m1l0-egress-reached
 * <address>"), runs a DNS server on RESOLVER (every *.egress.test name → PUBLIC) and an HTTP
 * forward proxy on PROXY:3128.
 */
export const TARGETS = {
  metadataV4: "169.254.169.254",
  metadataV6: "fd00:ec2::254",
  private10: "10.254.254.1",
  /** private, meant for BUILD_EGRESS_ALLOW */
  allowlisted: "10.254.254.2",
  /** the namespace's HTTP proxy (port 3128), private */
  proxy: "10.254.254.3",
  /** the namespace's DNS server (port 53), private like our machines' resolvers */
  resolver: "10.254.254.53",
  private172: "172.31.254.1",
  private192: "192.168.254.1",
  cgnat: "100.64.254.1",
  /** a stand-in for a public address (TEST-NET-3, routed into the namespace only) */
  public: "203.0.113.80",
  /** another "public" one, meant for BUILD_EGRESS_DENY (a worker service on a public address) */
  publicDenied: "203.0.113.81",
} as const;

const HOST_SIDE = "10.254.253.1";
const NS_SIDE = "10.254.253.2";
const HOST_SIDE_V6 = "fd00:ec2::1";

const SERVER = String.raw`
import { createServer, request } from "node:http";
import { createSocket } from "node:dgram";
const [resolver, proxy, answer] = process.argv.slice(2);
const reply = (req, res) => res.end("m1l0-egress-reached " + req.socket.localAddress.replace(/^::ffff:/, "") + "\n");
let pending = 4;
const ready = () => --pending === 0 && console.log("ready");
createServer(reply).listen(80, "0.0.0.0", ready);
createServer(reply).listen({ port: 80, host: "::", ipv6Only: true }, ready);
// a forward proxy: absolute-URI requests (what http_proxy clients send) are fetched and relayed
createServer((req, res) => {
  const upstream = request(req.url, { method: req.method, headers: { ...req.headers, "x-via": "m1l0-egress-proxy" } }, (answerRes) => {
    res.writeHead(answerRes.statusCode ?? 502, { ...answerRes.headers, "x-via": "m1l0-egress-proxy" });
    answerRes.pipe(res);
  });
  upstream.on("error", (error) => res.writeHead(502).end("proxy error " + error.message));
  req.pipe(upstream);
}).listen(3128, proxy, ready);
const dns = createSocket("udp4");
dns.on("message", (query, peer) => {
  let offset = 12;
  const labels = [];
  while (query[offset] !== 0 && offset < query.length) {
    labels.push(query.subarray(offset + 1, offset + 1 + query[offset]).toString());
    offset += query[offset] + 1;
  }
  const question = query.subarray(12, offset + 5);
  const type = query.readUInt16BE(offset + 1);
  const name = labels.join(".").toLowerCase();
  const known = name.endsWith(".egress.test");
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2);
  header.writeUInt16BE(known ? 0x8180 : 0x8183, 2);
  header.writeUInt16BE(1, 4);
  const answers = known && type === 1 ? [Buffer.from([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...answer.split(".").map(Number)])] : [];
  header.writeUInt16BE(answers.length, 6);
  dns.send(Buffer.concat([header, question, ...answers]), peer.port, peer.address);
});
dns.bind(53, resolver, ready);
`;

export interface EgressTargets {
  namespace: string;
  /** every address the namespace answers on */
  addresses: string[];
  close(): Promise<void>;
}

function ip(...args: string[]): void {
  execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });
}

export async function startEgressTargets(): Promise<EgressTargets> {
  const id = randomBytes(3).toString("hex");
  const namespace = `m1l0eg-${id}`;
  const hostVeth = `m1eg${id}h`;
  const nsVeth = `m1eg${id}n`;
  const dir = mkdtempSync(path.join(tmpdir(), "m1l0-egress-targets-"));
  const v4 = Object.values(TARGETS).filter((address) => !address.includes(":"));
  let server: ChildProcess | undefined;
  const close = async () => {
    server?.kill("SIGKILL");
    // deleting the namespace deletes its veth end, the pair and every route through it
    try {
      ip("netns", "del", namespace);
    } catch {
      // not created
    }
    try {
      ip("link", "del", hostVeth);
    } catch {
      // gone with the namespace
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    ip("netns", "add", namespace);
    ip("link", "add", hostVeth, "type", "veth", "peer", "name", nsVeth);
    ip("link", "set", nsVeth, "netns", namespace);
    ip("addr", "add", `${HOST_SIDE}/30`, "dev", hostVeth);
    ip("link", "set", hostVeth, "up");
    ip("-n", namespace, "link", "set", "lo", "up");
    ip("-n", namespace, "addr", "add", `${NS_SIDE}/30`, "dev", nsVeth);
    for (const address of v4) ip("-n", namespace, "addr", "add", `${address}/32`, "dev", nsVeth);
    ip("-n", namespace, "-6", "addr", "add", `${TARGETS.metadataV6}/128`, "dev", nsVeth, "nodad");
    ip("-n", namespace, "link", "set", nsVeth, "up");
    ip("-n", namespace, "route", "add", "default", "via", HOST_SIDE);
    ip("-n", namespace, "-6", "route", "add", "default", "dev", nsVeth);
    // replace, not add: a route an interrupted run left behind (its veth gone) must not stop this one
    for (const address of v4) ip("route", "replace", `${address}/32`, "via", NS_SIDE, "dev", hostVeth);
    // a host-side IPv6 address on the veth: the namespace answers it on-link (it would not find the LAN address)
    ip("-6", "addr", "add", `${HOST_SIDE_V6}/128`, "dev", hostVeth, "nodad");
    ip("-6", "route", "replace", `${TARGETS.metadataV6}/128`, "dev", hostVeth, "src", HOST_SIDE_V6);
    writeFileSync(path.join(dir, "server.mjs"), SERVER);
    server = spawn("ip", ["netns", "exec", namespace, process.execPath, path.join(dir, "server.mjs"), TARGETS.resolver, TARGETS.proxy, TARGETS.public], { stdio: ["ignore", "pipe", "pipe"] });
    const child = server;
    await new Promise<void>((resolve, reject) => {
      let output = "";
      const timer = setTimeout(() => reject(new Error(`the egress targets' server did not start within 20 s: ${output}`)), 20_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("ready")) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`the egress targets' server exited (${code}): ${output}`));
      });
    });
  } catch (error) {
    await close();
    throw error;
  }
  return { namespace, addresses: [...v4, TARGETS.metadataV6], close };
}

/** An HTTP listener on addresses of this host (a bridge gateway, the LAN address): "m1l0-egress-reached host <address>". */
export async function startHostListeners(addresses: string[]): Promise<{ port: number; close(): Promise<void> }> {
  const servers: Server[] = [];
  let port = 0;
  for (const address of addresses) {
    const server = createServer((req, res) => res.end(`m1l0-egress-reached host ${req.socket.localAddress}\n`));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, address, () => resolve());
    });
    port = (server.address() as { port: number }).port;
    servers.push(server);
  }
  return { port, close: async () => void (await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))) };
}
