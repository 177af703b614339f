import { connect } from "node:net";
import { describe, expect, it } from "vitest";
import { lineCollector, settlesWithin, startHungServer, withGcPressure } from "../src/index.js";

describe("startHungServer", () => {
  it.each([{ unix: false }, { unix: true }])("accepts and never answers (unix: $unix)", async ({ unix }) => {
    const server = await startHungServer({ unix });
    try {
      const socket = server.socketPath ? connect(server.socketPath) : connect(server.port!, "127.0.0.1");
      const answered = new Promise<string>((resolve) => socket.on("data", (chunk) => resolve(String(chunk))));
      await new Promise<void>((resolve) => socket.on("connect", () => resolve()));
      socket.write("GET / HTTP/1.1\r\nhost: x\r\n\r\n");
      expect((await settlesWithin(answered, 300)).outcome).toBe("pending");
      expect(server.connections).toBe(1);
      socket.destroy();
    } finally {
      await server.close();
    }
  });
});

describe("settlesWithin", () => {
  it("tells resolved, rejected and pending apart", async () => {
    expect((await settlesWithin(Promise.resolve(1), 100)).outcome).toBe("resolved");
    expect((await settlesWithin(Promise.reject(new Error("x")), 100)).outcome).toBe("rejected");
    expect((await settlesWithin(new Promise(() => undefined), 50)).outcome).toBe("pending");
  });
});

describe("withGcPressure", () => {
  it("really collects: a weakly held object is gone while it runs", async () => {
    let ref: WeakRef<object> | undefined;
    (() => {
      ref = new WeakRef({ big: new Array(1000).fill(0) });
    })();
    await withGcPressure(() => new Promise((resolve) => setTimeout(resolve, 100)));
    expect(ref?.deref()).toBeUndefined();
  });
});

describe("lineCollector", () => {
  it("keeps whole lines only: a line split across chunks arrives once, complete", () => {
    const lines: string[] = [];
    const collect = lineCollector(lines, "api");
    collect.write("first li");
    collect.write("ne\nsecond line\nthi");
    expect(lines).toEqual(["api: first line", "api: second line"]);
    collect.write("rd\n");
    collect.end();
    expect(lines).toEqual(["api: first line", "api: second line", "api: third"]);
  });

  it("keeps about the last maxLines lines when bounded", () => {
    const lines: string[] = [];
    const collect = lineCollector(lines, "worker", 10);
    for (let index = 0; index < 100; index++) collect.write(`line ${index}\n`);
    expect(lines.length).toBeLessThanOrEqual(20);
    expect(lines.at(-1)).toBe("worker: line 99");
  });
});
