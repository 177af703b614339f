export { formatBytes, formatMs, formatRatio, formatSummary, median, quantile, ratio, summarize, type Summary } from "./stats.js";
export { renderTable, renderTargets, type Table } from "./report.js";
