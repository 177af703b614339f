#!/usr/bin/env node
// Submits a config file to POST /builds, follows the build's events (SSE) printing each
// line, and ends with `image: <reference>` on success; exits 1 on failure.
import { readFileSync } from "node:fs";

const api = process.env.M1L0_API_URL ?? "http://127.0.0.1:8080";
const file = process.argv[2];
if (!file) {
  console.error("usage: submit.mjs <config.yaml|json>");
  process.exit(2);
}
const response = await fetch(`${api}/builds`, {
  method: "POST",
  headers: { "content-type": file.endsWith(".json") ? "application/json" : "application/yaml" },
  body: readFileSync(file, "utf8"),
});
const body = await response.json();
if (!response.ok) {
  console.error(`rejected (${response.status}): ${body.error?.message ?? JSON.stringify(body)}`);
  process.exit(1);
}
console.error(`build ${body.id} ${body.status}`);
const stream = await fetch(`${api}/builds/${body.id}/logs?follow=1`, { headers: { accept: "text/event-stream" } });
const decoder = new TextDecoder();
let buffer = "";
let final;
for await (const chunk of stream.body) {
  buffer += decoder.decode(chunk, { stream: true });
  let end;
  while ((end = buffer.indexOf("\n\n")) >= 0) {
    const frame = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    const data = frame.split("\n").find((line) => line.startsWith("data: "))?.slice(6);
    if (!data) continue;
    const event = JSON.parse(data);
    if (event.type === "log") console.error(`  [${event.phase}] ${event.line}`);
    else if (event.type === "status") {
      console.error(`==> ${event.status}${event.error ? `: ${event.error.message}` : ""}`);
      final = event;
    }
  }
}
const record = await (await fetch(`${api}/builds/${body.id}`)).json();
if (record.status !== "succeeded" && record.status !== "cached") {
  console.error(`build ${record.id} ${record.status}: ${record.error?.message ?? "unknown reason"}`);
  process.exit(1);
}
console.log(`id: ${record.id}`);
console.log(`image: ${record.image.reference}`);
console.log(`digest: ${record.image.digest}`);
void final;
