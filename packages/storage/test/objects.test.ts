import { randomBytes, randomUUID } from "node:crypto";
import { Readable } from "node:stream";
import { text } from "node:stream/consumers";
import { HeadObjectCommand } from "@aws-sdk/client-s3";
import { BuilderError } from "@m1l0/config";
import { afterAll, describe, expect, it } from "vitest";
import { createS3Client, deleteObject, getObjectStream, putObject } from "../src/index.js";

const endpoint = process.env.S3_ENDPOINT ?? "http://127.0.0.1:4569";
const bucket = process.env.S3_BUCKET ?? "m1l0-builds";
const settings = { endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" } };
const client = createS3Client(settings);
const prefix = `test/storage/${randomUUID()}`;
const written: string[] = [];

function keyFor(name: string): string {
  const key = `${prefix}/${name}`;
  written.push(key);
  return key;
}

async function rejection(promise: Promise<unknown>): Promise<BuilderError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BuilderError);
  return error as BuilderError;
}

afterAll(async () => {
  for (const key of written) await deleteObject(client, bucket, key).catch(() => undefined);
  client.destroy();
});

describe("putObject / getObjectStream", () => {
  it("round-trips a string with its content type", async () => {
    const key = keyFor("hello.txt");
    await putObject(client, bucket, key, "hello, s3\n", "text/plain");
    const { body, size } = await getObjectStream(client, bucket, key);
    expect(await text(body)).toBe("hello, s3\n");
    expect(size).toBe(10);
    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    expect(head.ContentType).toBe("text/plain");
  });

  it("round-trips a buffer", async () => {
    const key = keyFor("bytes.bin");
    const data = randomBytes(4096);
    await putObject(client, bucket, key, data);
    const { body } = await getObjectStream(client, bucket, key);
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
  });

  it("uploads a stream of unknown length larger than one part (multipart)", async () => {
    const key = keyFor("big.bin");
    const part = randomBytes(1024 * 1024);
    const total = 20;
    const stream = Readable.from(
      (function* () {
        for (let i = 0; i < total; i++) yield Buffer.concat([Buffer.from([i]), part.subarray(1)]);
      })(),
    );
    await putObject(client, bucket, key, stream, "application/octet-stream");
    const { body, size } = await getObjectStream(client, bucket, key);
    expect(size).toBe(total * part.length);
    let received = 0;
    const firstBytes: number[] = [];
    for await (const chunk of body) {
      const buf = chunk as Buffer;
      for (let offset = (part.length - (received % part.length)) % part.length; offset < buf.length; offset += part.length) {
        firstBytes.push(buf[offset] ?? -1);
      }
      received += buf.length;
    }
    expect(received).toBe(total * part.length);
    expect(firstBytes).toEqual(Array.from({ length: total }, (_, i) => i));
  });

  it("deletes an object, and deleting a missing key is fine", async () => {
    const key = keyFor("delete-me.txt");
    await putObject(client, bucket, key, "bye");
    await deleteObject(client, bucket, key);
    expect((await rejection(getObjectStream(client, bucket, key))).code).toBe("SOURCE_NOT_FOUND");
    await deleteObject(client, bucket, key);
  });

  it("maps a missing key to SOURCE_NOT_FOUND", async () => {
    const error = await rejection(getObjectStream(client, bucket, `${prefix}/missing.tar.gz`));
    expect(error.code).toBe("SOURCE_NOT_FOUND");
    expect(error.message).toContain(`s3://${bucket}/${prefix}/missing.tar.gz`);
    expect(error.retryable).toBe(false);
  });

  it("maps a missing bucket to SOURCE_NOT_FOUND", async () => {
    const error = await rejection(getObjectStream(client, `no-such-bucket-${Date.now()}`, "x.tar.gz"));
    expect(error.code).toBe("SOURCE_NOT_FOUND");
    expect(error.message).toMatch(/bucket .* does not exist/);
  });

  it("maps bad credentials to SOURCE_AUTH_FAILED", async () => {
    const key = keyFor("secret.txt");
    await putObject(client, bucket, key, "secret");
    const wrong = createS3Client({ ...settings, credentials: { accessKeyId: "WRONG", secretAccessKey: "WRONG" } });
    try {
      const error = await rejection(getObjectStream(wrong, bucket, key));
      expect(error.code).toBe("SOURCE_AUTH_FAILED");
      expect(error.retryable).toBe(false);
    } finally {
      wrong.destroy();
    }
  });

  it("maps an unreachable server to a retryable SOURCE_FETCH_FAILED", async () => {
    const down = createS3Client({ ...settings, endpoint: "http://127.0.0.1:1" });
    try {
      const error = await rejection(getObjectStream(down, bucket, "x.tar.gz"));
      expect(error.code).toBe("SOURCE_FETCH_FAILED");
      expect(error.retryable).toBe(true);
    } finally {
      down.destroy();
    }
  });

  it("rejects with the abort error when the signal is already aborted", async () => {
    const key = keyFor("abort.txt");
    await putObject(client, bucket, key, "x");
    const controller = new AbortController();
    controller.abort();
    const error = await getObjectStream(client, bucket, key, controller.signal).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeDefined();
    expect(error).not.toBeInstanceOf(BuilderError);
  });
});
