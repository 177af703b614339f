import { GetObjectCommand, ListObjectsCommand, type S3Client } from "@aws-sdk/client-s3";
import type { Redis } from "ioredis";
import { gunzipSync } from "node:zlib";

/** The secret scan: where a needle (a password, a token) occurs in Redis, S3 or text. */
export interface Finding {
  where: string;
  needle: string;
}

export function findNeedles(where: string, haystack: string, needles: readonly string[], findings: Finding[]): void {
  for (const needle of needles) if (haystack.includes(needle)) findings.push({ where, needle });
}

/** Every key and every value of every type in the whole Redis database. */
export async function scanRedis(redis: Redis, needles: readonly string[]): Promise<Finding[]> {
  const findings: Finding[] = [];
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "COUNT", "500");
    cursor = next;
    for (const key of keys) {
      findNeedles(`redis key ${key}`, key, needles, findings);
      const type = await redis.type(key);
      let text: string;
      switch (type) {
        case "string":
          text = (await redis.getBuffer(key))?.toString("latin1") ?? "";
          break;
        case "hash":
          text = JSON.stringify(await redis.hgetall(key));
          break;
        case "list":
          text = JSON.stringify(await redis.lrange(key, 0, -1));
          break;
        case "set":
          text = JSON.stringify(await redis.smembers(key));
          break;
        case "zset":
          text = JSON.stringify(await redis.zrange(key, "0", "-1", "WITHSCORES"));
          break;
        case "stream":
          text = JSON.stringify(await redis.xrange(key, "-", "+"));
          break;
        case "none":
          continue; // expired between SCAN and TYPE
        default:
          throw new Error(`secret scan cannot read Redis type ${type} (key ${key})`);
      }
      findNeedles(`redis ${type} ${key}`, text, needles, findings);
    }
  } while (cursor !== "0");
  return findings;
}

/** Every object in the bucket, gunzipped too (contexts and logs may be compressed). */
export async function scanS3(s3: S3Client, bucket: string, needles: readonly string[]): Promise<Finding[]> {
  const findings: Finding[] = [];
  // ListObjects v1 with Marker: s3rver answers 500 to a truncated V2 listing (its continuation
  // token needs DES, which Node 20's OpenSSL lacks), and other suites may fill the bucket past a page
  let marker: string | undefined;
  do {
    const page = await s3.send(new ListObjectsCommand({ Bucket: bucket, ...(marker ? { Marker: marker } : {}) }));
    for (const object of page.Contents ?? []) {
      findNeedles(`s3 key ${object.Key}`, object.Key ?? "", needles, findings);
      const body = Buffer.from(await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: object.Key }))).Body!.transformToByteArray());
      findNeedles(`s3 object ${object.Key}`, body.toString("latin1"), needles, findings);
      if (body[0] === 0x1f && body[1] === 0x8b) {
        findNeedles(`s3 object ${object.Key} (gunzipped)`, gunzipSync(body).toString("latin1"), needles, findings);
      }
    }
    marker = page.IsTruncated ? (page.NextMarker ?? page.Contents?.at(-1)?.Key) : undefined;
  } while (marker);
  return findings;
}
