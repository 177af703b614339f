export { BuildHistory, archivedEvents } from "./history.js";
export { decodeCursor, encodeCursor } from "./cursor.js";
export type { HistoryPage, HistoryPageOptions } from "./history-page.js";
export { DASHBOARD_PATH, registerDashboard } from "./dashboard.js";
export { DOCS_PATH, buildConfigJsonSchema, registerApiDocs } from "./docs.js";
export { createApiMetrics, registerMetricsRoute } from "./metrics.js";
export { SIGN_IN_PATH, SIGN_OUT_PATH, registerSignIn, safeNext } from "./sign-in.js";
