import { describe, expect, it } from "vitest";
import { readSseFrames, type SseFrame } from "../src/index.js";

function streamOf(chunks: Array<string | Uint8Array>): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(typeof chunk === "string" ? encoder.encode(chunk) : chunk);
      controller.close();
    },
  });
}

async function frames(chunks: Array<string | Uint8Array>): Promise<SseFrame[]> {
  const result: SseFrame[] = [];
  for await (const frame of readSseFrames(streamOf(chunks))) result.push(frame);
  return result;
}

describe("readSseFrames", () => {
  it("reassembles frames split anywhere, including inside a CRLF and a multi-byte character", async () => {
    const text = 'id: 1-0\nevent: log\ndata: {"line":"é"}\n\n: keep-alive comment\n\nid: 1-1\r\nevent: status\r\ndata: a\r\ndata: b\r\n\r\nevent: end\ndata: {}\n\n';
    const bytes = new TextEncoder().encode(text);
    const expected: SseFrame[] = [
      { id: "1-0", event: "log", data: '{"line":"é"}' },
      { id: "1-1", event: "status", data: "a\nb" },
      { event: "end", data: "{}" },
    ];
    expect(await frames([text])).toEqual(expected);
    // every split point, byte by byte
    for (let cut = 1; cut < bytes.length; cut++) {
      expect(await frames([bytes.slice(0, cut), bytes.slice(cut)]), `split at ${cut}`).toEqual(expected);
    }
  });

  it("drops an unterminated last frame (the connection broke mid-frame)", async () => {
    expect(await frames(["id: 1-0\nevent: log\ndata: {}\n\nid: 1-1\nevent: log\ndata: {\"li"])).toEqual([{ id: "1-0", event: "log", data: "{}" }]);
  });
});
