import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { digestingStream } from "../src/index.js";
import { collect } from "./helpers.js";

describe("digestingStream", () => {
  it("passes bytes through unchanged and resolves their sha256", async () => {
    const chunks = Array.from({ length: 50 }, (_, index) => randomBytes(1000 + index * 997));
    const { stream, digest } = digestingStream();
    const [passed] = await Promise.all([collect(stream), pipeline(Readable.from(chunks), stream)]);

    const whole = Buffer.concat(chunks);
    expect(passed.equals(whole)).toBe(true);
    expect(await digest).toBe(createHash("sha256").update(whole).digest("hex"));
  });

  it("gives the empty input's digest", async () => {
    const { stream, digest } = digestingStream();
    stream.resume();
    stream.end();
    expect(await digest).toBe(createHash("sha256").digest("hex"));
  });

  it("rejects when the stream is destroyed before it ends", async () => {
    const { stream, digest } = digestingStream();
    const streamError = once(stream, "error");
    stream.write(Buffer.from("partial"));
    stream.destroy(new Error("upload aborted"));
    await expect(digest).rejects.toThrow("upload aborted");
    expect(await streamError).toEqual([expect.objectContaining({ message: "upload aborted" })]);
  });
});
