import type { UploadState } from "@m1l0/queue";
import { artifactKeys, type MultipartPart } from "@m1l0/storage";
import { LOG_CONTENT_TYPE, remainingLines, type LogSpoolContext } from "./log-spool.js";

/**
 * Uploads the complete log: the parts already in S3 (recorded in Redis), then the rest (the
 * spool past them, or Redis's tail when the spool is on another host) as further parts, and
 * completes the multipart upload. A log that never filled a part is one PUT. Safe to repeat:
 * the same content goes to the same key and part numbers, and a completed upload stays done.
 */
export async function uploadCompleteLog(ctx: LogSpoolContext, state: UploadState): Promise<{ lines: number }> {
  const key = artifactKeys.log(ctx.buildId);
  const parts: MultipartPart[] = (state.multipart?.parts ?? []).map(({ partNumber, etag }) => ({ partNumber, etag }));
  let uploadId = state.multipart?.uploadId;
  let chunks: Buffer[] = [];
  let size = 0;
  let lines = 0;
  const flushPart = async () => {
    if (!uploadId) {
      uploadId = await ctx.artifacts.startMultipart(key, LOG_CONTENT_TYPE);
      // recorded, so a retry reuses this upload rather than leaving one behind per attempt
      await ctx.uploads.set(ctx.buildId, { multipart: { uploadId, parts: state.multipart?.parts ?? [] } });
    }
    const partNumber = parts.length + 1;
    parts.push({ partNumber, etag: await ctx.artifacts.putPart(key, uploadId, partNumber, Buffer.concat(chunks)) });
    chunks = [];
    size = 0;
  };
  for await (const line of remainingLines(ctx, state)) {
    const bytes = Buffer.from(`${line.text}\n`, "utf8");
    chunks.push(bytes);
    size += bytes.length;
    lines++;
    if (size >= ctx.partBytes) await flushPart();
  }
  if (parts.length === 0) {
    await ctx.artifacts.put(key, Buffer.concat(chunks), LOG_CONTENT_TYPE);
    return { lines };
  }
  if (size > 0) await flushPart();
  await ctx.artifacts.completeMultipart(key, uploadId!, parts);
  return { lines };
}
