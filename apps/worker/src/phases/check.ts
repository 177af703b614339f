import { performance } from "node:perf_hooks";
import { dependencyFileOf, describeMissing, importCheckCommand, missingDependencyError, parseImportReport } from "../import-check/index.js";
import { withSignal, type Attempt } from "./attempt.js";

/**
 * The import check (IMPORT_CHECK): runs the built image once, sandboxed, with the worker's
 * checker instead of the entry, and fails the build with MISSING_DEPENDENCY before anything is
 * pushed when the entry or a project module it reaches imports a module the image lacks.
 * When the check cannot run (no python3 in the image, the entry not in it, its deadline) the
 * log says so and the build goes on: the check is a safety net, not a second build.
 */
export async function importCheckPhase(attempt: Attempt, layouts: readonly string[] | undefined): Promise<void> {
  const { deps, config, target, signal } = attempt;
  if (!deps.importCheck) return;
  const log = (line: string) => void attempt.log.build(`import check: ${line}`);
  const started = performance.now();
  const result = await deps.builder.run({
    image: target.reference,
    command: importCheckCommand(config.entry),
    env: { PYTHONDONTWRITEBYTECODE: "1" },
    timeoutMs: deps.importCheck.timeoutMs,
    ...(deps.buildMemoryBytes ? { memoryBytes: deps.buildMemoryBytes } : {}),
    ...(deps.buildCpuQuota ? { cpuQuota: deps.buildCpuQuota } : {}),
    ...withSignal(signal),
  });
  const ms = Math.round(performance.now() - started);
  if (result.timedOut) return log(`skipped: it did not finish within ${deps.importCheck.timeoutMs / 1000} s (IMPORT_CHECK_TIMEOUT_SECONDS)`);
  if (result.exitCode === 127) return log(`skipped: the image has no python3 (${ms} ms)`);
  const report = parseImportReport(result.stdout);
  if (!report) return log(`skipped: python3 in the image exited ${result.exitCode} without a report: ${lastLine(result.stderr)}`);
  if (report.skipped) return log(`skipped: ${report.skipped}`);
  const where = dependencyFileOf(Boolean(config.dockerfile), layouts);
  for (const note of report.notes) log(`note: ${note}`);
  for (const optional of report.guarded) log(`note: ${optional.file}:${optional.line} imports "${optional.module}" under a guard (try/except ImportError, TYPE_CHECKING, or a platform or Python version test); it is not installed, the project is expected to run without it`);
  for (const missing of report.missing) log(describeMissing(missing, where));
  const summary = `${report.files} file(s), ${report.imports} import(s), python ${report.python}; ${ms} ms (checker ${report.ms.toFixed(1)} ms)`;
  if (report.missing.length) {
    await attempt.log.build(`import check: failed, ${report.missing.length} missing module(s); ${summary}; nothing is pushed`);
    throw missingDependencyError(report, where);
  }
  await attempt.log.build(`import check: passed, ${summary}`);
}

function lastLine(text: string): string {
  return text.trim().split("\n").at(-1)?.slice(0, 500) || "(no output)";
}
