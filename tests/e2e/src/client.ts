/** Minimal REST helpers for the tests (the SDK package will replace these). */
export interface BuildRecordView {
  id: string;
  status: string;
  commit?: string;
  attempts: number;
  image?: { registry: string; repository: string; tag: string; reference: string; digest?: string };
  error?: { code: string; message: string };
  timestamps: Record<string, string>;
}

export async function submit(apiUrl: string, config: unknown): Promise<string> {
  const response = await fetch(`${apiUrl}/builds`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(config) });
  const body = (await response.json()) as { id?: string; error?: unknown };
  if (response.status !== 202 || !body.id) throw new Error(`submit failed (${response.status}): ${JSON.stringify(body)}`);
  return body.id;
}

export async function getBuild(apiUrl: string, id: string): Promise<BuildRecordView> {
  return (await (await fetch(`${apiUrl}/builds/${id}`)).json()) as BuildRecordView;
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "cached"]);

export async function waitForBuild(apiUrl: string, id: string, timeoutMs = 300_000): Promise<BuildRecordView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = await getBuild(apiUrl, id);
    if (TERMINAL.has(record.status)) return record;
    if (Date.now() > deadline) throw new Error(`build ${id} still ${record.status} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

export async function getLog(apiUrl: string, id: string): Promise<string> {
  return (await fetch(`${apiUrl}/builds/${id}/logs`)).text();
}
