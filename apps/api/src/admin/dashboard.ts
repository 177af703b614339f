import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { FastifyAdapter } from "@bull-board/fastify";
import type { Queue } from "bullmq";
import type { FastifyInstance, FastifyRequest } from "fastify";

export const DASHBOARD_PATH = "/admin/queues";

/**
 * Decides whether a request may open the dashboard; throw a BuilderError to refuse.
 * AUTH HOOK: until the API has authentication this is absent and the dashboard is open, so
 * bind the API to a private address. When auth lands, pass the same check the REST routes use.
 */
export type DashboardAuthorizer = (request: FastifyRequest) => Promise<void>;

/** bull-board for the build queue at /admin/queues (read-only: retrying or deleting builds belongs to the API). */
export async function registerDashboard(app: FastifyInstance, queue: Queue, authorize?: DashboardAuthorizer): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: [new BullMQAdapter(queue, { readOnlyMode: true, description: "image builds (job id = build id)" })],
    // @bull-board/fastify pins @bull-board/api 9.10.1 while the API depends on 9.10.2: same runtime
    // interface, distinct declarations (private fields), hence the cast. Aligning the versions removes it.
    serverAdapter: serverAdapter as unknown as Parameters<typeof createBullBoard>[0]["serverAdapter"],
    options: { uiConfig: { boardTitle: "M1L0 builds" } },
  });
  await app.register(
    async (scope) => {
      if (authorize) scope.addHook("onRequest", async (request) => authorize(request));
      await scope.register(serverAdapter.registerPlugin());
    },
    { prefix: DASHBOARD_PATH },
  );
}
