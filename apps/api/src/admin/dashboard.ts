import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { FastifyAdapter } from "@bull-board/fastify";
import type { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";

export const DASHBOARD_PATH = "/admin/queues";

/**
 * bull-board for the build queue at /admin/queues (read-only: retrying or deleting builds
 * belongs to the API). Admin tokens only, as HTTP Basic (token as the password) or Bearer:
 * the auth hook (auth/rest.ts) gives every route under DASHBOARD_PATH that policy.
 */
export async function registerDashboard(app: FastifyInstance, queue: Queue): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: [new BullMQAdapter(queue, { readOnlyMode: true, description: "image builds (job id = build id)" })],
    // @bull-board/fastify pins @bull-board/api 9.10.1 while the API depends on 9.10.2: same runtime
    // interface, distinct declarations (private fields), hence the cast. Aligning the versions removes it.
    serverAdapter: serverAdapter as unknown as Parameters<typeof createBullBoard>[0]["serverAdapter"],
    options: { uiConfig: { boardTitle: "M1L0 builds" } },
  });
  await app.register(serverAdapter.registerPlugin(), { prefix: DASHBOARD_PATH });
}
