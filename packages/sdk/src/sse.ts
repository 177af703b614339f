/** One Server-Sent Events frame: the fields our API sends. */
export interface SseFrame {
  id?: string;
  event: string;
  data: string;
}

/**
 * Splits an SSE byte stream into frames (https://html.spec.whatwg.org/#event-stream-interpretation).
 * Comment lines and unknown fields are ignored; multi-line data is joined with "\n".
 */
export async function* readSseFrames(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const decoder = new TextDecoder();
  let buffer = "";
  let frame: { id?: string; event?: string; data: string[] } = { data: [] };
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let newline: number;
      // split on "\n" only and drop a trailing "\r", so a CRLF cut between chunks is still one line break
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).replace(/\r$/, "");
        buffer = buffer.slice(newline + 1);
        if (line === "") {
          if (frame.data.length > 0 || frame.event) {
            yield { ...(frame.id !== undefined ? { id: frame.id } : {}), event: frame.event ?? "message", data: frame.data.join("\n") };
          }
          frame = { data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") frame.data.push(value);
        else if (field === "event") frame.event = value;
        else if (field === "id") frame.id = value;
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
