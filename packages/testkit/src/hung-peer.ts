import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

/** A peer that accepts connections, reads what it is sent and never answers a byte. */
export interface HungServer {
  /** `http://127.0.0.1:<port>` (TCP) or the socket's path (unix) */
  readonly address: string;
  readonly port: number | undefined;
  readonly socketPath: string | undefined;
  /** connections accepted so far (a test can check the client really got through) */
  readonly connections: number;
  close(): Promise<void>;
}

/**
 * Starts a hung peer on loopback TCP, or on a unix socket (`{ unix: true }`, e.g. a stand-in
 * for a Docker daemon that stopped answering). Its sockets are destroyed on close.
 */
export async function startHungServer(options: { unix?: boolean } = {}): Promise<HungServer> {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on("data", () => undefined);
    socket.on("error", () => undefined);
    socket.on("close", () => sockets.delete(socket));
  });
  const dir = options.unix ? mkdtempSync(path.join(tmpdir(), "m1l0-hung-")) : undefined;
  const socketPath = dir ? path.join(dir, "hung.sock") : undefined;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (socketPath) server.listen(socketPath, resolve);
    else server.listen(0, "127.0.0.1", resolve);
  });
  const bound = server.address();
  const port = typeof bound === "object" && bound ? bound.port : undefined;
  return {
    address: socketPath ?? `http://127.0.0.1:${port}`,
    port,
    socketPath,
    get connections() {
      return connections;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
