import { createBullBoard } from "@bull-board/api";
import { BullMQAdapter } from "@bull-board/api/bullMQAdapter";
import { FastifyAdapter } from "@bull-board/fastify";
import type { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";

export const DASHBOARD_PATH = "/admin/queues";

export interface DashboardOptions {
  /** a "Sign out" link in the dashboard's header (absent when authentication is disabled) */
  signOutPath?: string;
}

/**
 * bull-board for the build queue at /admin/queues (read-only: retrying or deleting builds
 * belongs to the API). Admin tokens only, as Bearer or the session cookie of the sign-in page
 * (admin/sign-in.ts): the auth hook (auth/rest.ts) gives every route under DASHBOARD_PATH that
 * policy, its static files and locale files included. Each job's progress is its build's phase
 * and its logs name the build's log (the worker writes both, apps/worker/src/progress.ts).
 */
export async function registerDashboard(app: FastifyInstance, queue: Queue, options: DashboardOptions = {}): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: [new BullMQAdapter(queue, { readOnlyMode: true, description: "image builds (job id = build id)" })],
    // @bull-board/fastify pins @bull-board/api 9.10.1 while the API depends on 9.10.2: same runtime
    // interface, distinct declarations (private fields), hence the cast. The page, its scripts and
    // its locale files all come from the @bull-board/ui that @bull-board/api 9.10.2 resolves.
    serverAdapter: serverAdapter as unknown as Parameters<typeof createBullBoard>[0]["serverAdapter"],
    options: {
      uiConfig: {
        boardTitle: "M1L0 builds",
        // English whatever the browser's language; the labels come from static/locales/en-US
        locale: { lng: "en-US" },
        hideDocsLink: true,
        ...(options.signOutPath ? { miscLinks: [{ text: "Sign out", url: options.signOutPath }] } : {}),
      },
    },
  });
  await app.register(serverAdapter.registerPlugin(), { prefix: DASHBOARD_PATH });
}
