import { BuilderError } from "@m1l0/config";
import { Errors, type GitHttpResponse } from "isomorphic-git";
import type { GitSession } from "./session.js";

/**
 * The client side of git's smart HTTP protocol, version 1, for one shallow fetch: the ref
 * advertisement, then one upload-pack request whose pack is handed on chunk by chunk (git's own
 * `fetch-pack` does the same; isomorphic-git's fetch collects the whole response in memory).
 * Every request goes through the session's checked HTTP client (policy, redirects, byte cap,
 * deadline); credentials are sent only after the server asks for them, as git does.
 */

const AGENT = "git/m1l0-image-builder";

/** A pkt-line stream over a response body: payloads, `null` for a flush or delimiter packet. */
class PktLineReader {
  private readonly chunks: Buffer[] = [];
  private available = 0;

  constructor(
    private readonly body: AsyncIterator<Uint8Array>,
    private readonly what: string,
  ) {}

  /** The next packet's payload, `null` for 0000/0001/0002, undefined at the end of the body. */
  async next(): Promise<Buffer | null | undefined> {
    if (!(await this.fill(4))) {
      if (this.available === 0) return undefined;
      throw this.protocolError("the response ends inside a packet header");
    }
    const header = this.take(4).toString("latin1");
    if (!/^[0-9a-f]{4}$/i.test(header)) throw this.protocolError(`'${header.replace(/[^\x20-\x7e]/g, "?")}' is not a packet length`);
    const length = Number.parseInt(header, 16);
    if (length < 4) return null;
    if (!(await this.fill(length - 4))) throw this.protocolError("the response ends inside a packet");
    return this.take(length - 4);
  }

  /** Stops reading (the request is torn down); never fails: the node client's return() is not a well-formed iterator close. */
  async close(): Promise<void> {
    try {
      await this.body.return?.();
    } catch {
      // nothing to do: the body is abandoned either way
    }
  }

  private async fill(bytes: number): Promise<boolean> {
    while (this.available < bytes) {
      const next = await this.body.next();
      if (next.done) return false;
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
      this.chunks.push(chunk);
      this.available += chunk.length;
    }
    return true;
  }

  private take(bytes: number): Buffer {
    this.available -= bytes;
    const first = this.chunks[0]!;
    if (first.length > bytes) {
      this.chunks[0] = first.subarray(bytes);
      return first.subarray(0, bytes);
    }
    if (first.length === bytes) return this.chunks.shift()!;
    const out = Buffer.allocUnsafe(bytes);
    let written = 0;
    while (written < bytes) {
      const chunk = this.chunks[0]!;
      const part = Math.min(chunk.length, bytes - written);
      chunk.copy(out, written, 0, part);
      written += part;
      if (part === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(part);
    }
    return out;
  }

  private protocolError(why: string): Error {
    return new Error(`the git server's ${this.what} is malformed: ${why}`);
  }
}

function pktLine(text: string): Buffer {
  const payload = Buffer.from(text, "utf8");
  return Buffer.concat([Buffer.from((payload.length + 4).toString(16).padStart(4, "0"), "latin1"), payload]);
}

const FLUSH_PKT = Buffer.from("0000", "latin1");

async function bodyText(response: GitHttpResponse, limit = 4096): Promise<string> {
  const parts: Buffer[] = [];
  let bytes = 0;
  if (response.body) {
    for await (const chunk of response.body) {
      parts.push(Buffer.from(chunk));
      bytes += chunk.byteLength;
      if (bytes >= limit) break;
    }
  }
  return Buffer.concat(parts).toString("utf8").slice(0, limit);
}

export interface Advertisement {
  /** ref name → object id, HEAD included */
  refs: Map<string, string>;
  /** tag name → the commit an annotated tag points at */
  peeled: Map<string, string>;
  capabilities: Set<string>;
  /** HEAD's target (`symref=HEAD:refs/heads/main`), when the server names it */
  head: string | undefined;
}

/** One upload-pack conversation of a session; remembers credentials once the server asked for them. */
export class UploadPackClient {
  private authorization: string | undefined;

  constructor(private readonly session: GitSession) {}

  private get base(): string {
    return this.session.parsed.url.replace(/\/+$/, "");
  }

  /** The v1 ref advertisement (one request: v2 would take two). */
  async advertisement(): Promise<Advertisement> {
    const response = await this.request({ url: `${this.base}/info/refs?service=git-upload-pack`, method: "GET", headers: {} });
    const type = response.headers?.["content-type"] ?? "";
    const reader = new PktLineReader(response.body ?? emptyBody(), "ref advertisement");
    try {
      const first = type === "application/x-git-upload-pack-advertisement" ? await reader.next() : undefined;
      if (!first || !first.toString("utf8").startsWith("# service=git-upload-pack")) {
        throw new Errors.SmartHttpError(first ? first.toString("utf8").slice(0, 64) : type, "");
      }
      const advertisement: Advertisement = { refs: new Map(), peeled: new Map(), capabilities: new Set(), head: undefined };
      // the service line is followed by a flush; the refs end at the next one
      let line = await reader.next();
      if (line === null) line = await reader.next();
      for (; line; line = await reader.next()) {
        const [refPart, capabilities] = line.toString("utf8").replace(/\n$/, "").split("\0");
        if (capabilities !== undefined) for (const capability of capabilities.split(" ").filter(Boolean)) advertisement.capabilities.add(capability);
        const [oid, name] = (refPart ?? "").split(" ");
        if (!oid || !name || !/^[0-9a-f]{40}$/.test(oid) || name === "capabilities^{}") continue;
        if (name.endsWith("^{}")) advertisement.peeled.set(name.slice(0, -3), oid);
        else advertisement.refs.set(name, oid);
      }
      for (const capability of advertisement.capabilities) {
        if (capability.startsWith("symref=HEAD:")) advertisement.head = capability.slice("symref=HEAD:".length);
      }
      return advertisement;
    } finally {
      await reader.close();
    }
  }

  /**
   * Asks for `want` at depth 1 and hands each chunk of the pack to `onPack` (awaited, so a slow
   * disk slows the reading). The server's sideband errors fail the fetch with its own words.
   */
  async fetchShallow(want: string, capabilities: string[], onPack: (chunk: Buffer) => Promise<void>): Promise<void> {
    const body = [pktLine(`want ${want} ${[...capabilities, `agent=${AGENT}`].join(" ")}\n`), pktLine("deepen 1\n"), FLUSH_PKT, pktLine("done\n")];
    const response = await this.request({
      url: `${this.base}/git-upload-pack`,
      method: "POST",
      headers: { "content-type": "application/x-git-upload-pack-request", accept: "application/x-git-upload-pack-result" },
      body,
    });
    const reader = new PktLineReader(response.body ?? emptyBody(), "upload-pack response");
    try {
      // shallow/unshallow lines and a flush, then NAK (no haves were sent), then the sideband
      for (;;) {
        const line = await reader.next();
        if (line === undefined) throw new Error("the git server's upload-pack response ends before the pack");
        if (line === null) continue;
        const text = line.toString("utf8").trim();
        if (text.startsWith("ERR ")) throw this.serverError(text.slice(4));
        if (text === "NAK" || text.startsWith("ACK ")) break;
        if (!text.startsWith("shallow ") && !text.startsWith("unshallow ")) throw new Error(`unexpected line from the git server before the pack: ${text.slice(0, 80)}`);
      }
      for (let packet = await reader.next(); packet !== undefined; packet = await reader.next()) {
        if (packet === null || packet.length === 0) continue;
        const band = packet[0];
        if (band === 1) await onPack(packet.subarray(1));
        else if (band === 3) throw this.serverError(packet.subarray(1).toString("utf8").trim());
        // band 2 is progress text; `no-progress` asks the server to keep it short
      }
    } finally {
      await reader.close();
    }
  }

  private serverError(message: string): BuilderError {
    const { ctx } = this.session;
    return new BuilderError("SOURCE_FETCH_FAILED", `git server ${ctx.host} refused to send ${ctx.shown}: ${ctx.redact(message).slice(0, 300)}`, { retryable: false });
  }

  /** A request that answers one 401 with the host's credentials, as git does; any other non-200 fails. */
  private async request(request: { url: string; method: string; headers: Record<string, string>; body?: Buffer[] }): Promise<GitHttpResponse> {
    const send = () =>
      this.session.http.request({
        url: request.url,
        method: request.method,
        headers: { "user-agent": AGENT, ...request.headers, ...(this.authorization ? { authorization: this.authorization } : {}) },
        // an array body is sent with a Content-Length and may be replayed on a 307/308
        ...(request.body ? { body: request.body as unknown as AsyncIterableIterator<Uint8Array> } : {}),
      });
    let response = await send();
    if (response.statusCode === 401 && this.authorization === undefined) {
      const auth = this.session.onAuth(request.url);
      if (!auth.cancel && (auth.username || auth.password)) {
        await response.body?.return?.();
        this.authorization = `Basic ${Buffer.from(`${auth.username ?? ""}:${auth.password ?? ""}`).toString("base64")}`;
        response = await send();
      }
    }
    if (response.statusCode !== 200) {
      const text = await bodyText(response).catch(() => "");
      throw new Errors.HttpError(response.statusCode, response.statusMessage, text);
    }
    return response;
  }
}

function emptyBody(): AsyncIterator<Uint8Array> {
  return { next: async () => ({ done: true, value: undefined }) };
}
