import { createHash } from "node:crypto";
import { Transform } from "node:stream";

/** sha256 of the bytes passing through; the digest rejects if the stream is destroyed before it ends. */
export function digestingStream(): { stream: Transform; digest: Promise<string> } {
  const hash = createHash("sha256");
  let resolveDigest!: (digest: string) => void;
  let rejectDigest!: (error: Error) => void;
  const digest = new Promise<string>((resolve, reject) => {
    resolveDigest = resolve;
    rejectDigest = reject;
  });
  // Callers that only consume the stream must not crash the process with an unhandled rejection.
  digest.catch(() => undefined);
  const stream = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
    flush(callback) {
      resolveDigest(hash.digest("hex"));
      callback();
    },
    destroy(error, callback) {
      // No-op once flushed: a promise settles only once.
      rejectDigest(error ?? new Error("stream was destroyed before it ended"));
      callback(error);
    },
  });
  return { stream, digest };
}
