export { formatBytes, formatMs, formatRatio, formatSummary, median, quantile, ratio, summarize, type Summary } from "./stats.js";
export { renderTable, renderTargets, type Table } from "./report.js";
export { PACKAGE_NAME, startPackageIndex, type DependencySpec, type PackageIndex } from "./deps-index.js";
export { AFTER_LAST_STEP, BEFORE_FIRST_STEP, buildSteps, LineStamper, stampedBuildLines, stepRows, stepTimes, type StampedLine, type StepTimes } from "./steps.js";
