/** Minimal REST helpers for the tests; they send the token registered for the API they call. */

import { apiFetch } from "@m1l0/testkit";

export { apiFetch, authHeaders, registerApiToken } from "@m1l0/testkit";

export interface BuildRecordView {
  id: string;
  status: string;
  commit?: string;
  buildKey?: string;
  /** the image the build started FROM (after catalog overrides) */
  baseImage?: string;
  /** the layouts the generated Dockerfile installed */
  layouts?: string[];
  attempts: number;
  image?: { registry: string; repository: string; tag: string; reference: string; digest?: string };
  error?: { code: string; message: string };
  timestamps: Record<string, string>;
  worker?: string;
  submitter?: string;
  cancelRequestedAt?: string;
  attemptErrors?: Array<{ attempt: number; code: string; message: string; at: string }>;
}

export async function submit(apiUrl: string, config: unknown): Promise<string> {
  const response = await apiFetch(`${apiUrl}/builds`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(config) });
  const body = (await response.json()) as { id?: string; error?: unknown };
  if (response.status !== 202 || !body.id) throw new Error(`submit failed (${response.status}): ${JSON.stringify(body)}`);
  return body.id;
}

export async function getBuild(apiUrl: string, id: string): Promise<BuildRecordView> {
  const response = await apiFetch(`${apiUrl}/builds/${id}`);
  if (!response.ok) throw new Error(`GET /builds/${id}: ${response.status}`);
  return (await response.json()) as BuildRecordView;
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "cached"]);

/** Polls the record until `done` holds; unanswered polls (e.g. while Redis restarts) are retried. */
export async function waitUntil(apiUrl: string, id: string, done: (record: BuildRecordView) => boolean, timeoutMs = 120_000, intervalMs = 100): Promise<BuildRecordView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = await getBuild(apiUrl, id).catch(() => undefined);
    if (record && done(record)) return record;
    if (Date.now() > deadline) throw new Error(`build ${id} did not reach the expected state; last: ${JSON.stringify(record)}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export async function waitForBuild(apiUrl: string, id: string, timeoutMs = 300_000): Promise<BuildRecordView> {
  return waitUntil(apiUrl, id, (record) => TERMINAL.has(record.status), timeoutMs, 250);
}

export async function getLog(apiUrl: string, id: string): Promise<string> {
  return (await apiFetch(`${apiUrl}/builds/${id}/logs`)).text();
}
