import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** One request a receiver got, as it came (the raw body is what a signature covers). */
export interface ReceivedWebhook {
  headers: IncomingHttpHeaders;
  body: string;
  /** Date.now() when the whole body had arrived */
  receivedAt: number;
}

/** How the receiver answers: a status (with a short body), or a 200 whose body never ends. */
export type ReceiverAnswer = number | "endless-body" | { redirect: string };

export interface WebhookReceiver {
  readonly url: string;
  readonly port: number;
  /** every request, in arrival order (duplicates included) */
  readonly received: ReceivedWebhook[];
  /** what the next requests get [204] */
  answer: ReceiverAnswer;
  close(): Promise<void>;
}

/**
 * A real HTTP receiver for webhook tests on 127.0.0.1 (on `port` when given, e.g. one a test
 * keeps free while the receiver is "down"). It records requests and answers as told.
 */
export async function startWebhookReceiver(options: { port?: number; answer?: ReceiverAnswer } = {}): Promise<WebhookReceiver> {
  const received: ReceivedWebhook[] = [];
  const sockets = new Set<Socket>();
  const respond = (response: ServerResponse, answer: ReceiverAnswer) => {
    if (answer === "endless-body") {
      response.writeHead(200, { "content-type": "text/plain" });
      const chunk = Buffer.alloc(16 * 1024, "x");
      const pump = () => {
        while (!response.destroyed && response.write(chunk));
        if (!response.destroyed) response.once("drain", pump);
      };
      return pump();
    }
    if (typeof answer === "object") {
      response.writeHead(302, { location: answer.redirect });
      return response.end();
    }
    response.writeHead(answer, { "content-type": "text/plain" });
    response.end(answer >= 400 ? `receiver says ${answer}` : "");
  };
  const receiver = {
    answer: options.answer ?? (204 as ReceiverAnswer),
  };
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => {
      received.push({ headers: request.headers, body: Buffer.concat(chunks).toString("utf8"), receivedAt: Date.now() });
      respond(response, receiver.answer);
    });
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", resolve);
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return Object.assign(receiver, {
    url: `http://127.0.0.1:${port}/hook`,
    port,
    received,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
}
