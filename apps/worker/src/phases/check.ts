import { performance } from "node:perf_hooks";
import type { RunResult } from "../builder.js";
import { dependencyFileOf, describeMissing, importCheckCommand, missingDependencyError, parseImportReport } from "../import-check/index.js";
import { withSignal, type Attempt } from "./attempt.js";
import { Prefetch } from "./prefetch.js";

/** One run of the checker in an image, as it came back. */
interface CheckRun {
  result: RunResult;
  ms: number;
  /** the step whose image it ran on, when it ran before the build ended */
  step?: number;
}

/**
 * The import check (IMPORT_CHECK): runs the built image once, sandboxed, with the worker's
 * checker instead of the entry, and fails the build with MISSING_DEPENDENCY before anything is
 * pushed when the entry or a project module it reaches imports a module the image lacks.
 * When the check cannot run (no python3 in the image, the entry not in it, its deadline) the
 * log says so and the build goes on: the check is a safety net, not a second build.
 *
 * With a generated Dockerfile the check starts early, on the image of the step after which the
 * files are final (`filesFinalStep`: only the label step follows), so it runs while the builder
 * commits that step instead of after it. Its result counts only if that image has exactly the
 * built image's layers (a RUN step could print a line that looks like a step's image); otherwise
 * it is discarded unread and the built image is checked. Nothing is logged before that, so no
 * other image's report reaches this build's log.
 */
export class ImportCheck {
  private early: { image: string; run: Prefetch<CheckRun> } | undefined;

  constructor(
    private readonly attempt: Attempt,
    private readonly plan: { filesFinalStep?: number; layouts?: readonly string[] },
  ) {}

  /** The builder's report of each step's image (ImageBuildRequest.onStepImage). */
  readonly onStepImage = (step: number, imageId: string): void => {
    const settings = this.attempt.deps.importCheck;
    if (!settings || this.early || step !== this.plan.filesFinalStep) return;
    const run = new Prefetch(async (signal) => ({ ...(await runChecker(this.attempt, imageId, settings.timeoutMs, signal)), step }), this.attempt.signal);
    run.start();
    this.early = { image: imageId, run };
  };

  /** After the build: the check's verdict on `built` (the early run's when it qualifies); throws MISSING_DEPENDENCY. */
  async finish(built: string): Promise<void> {
    const settings = this.attempt.deps.importCheck;
    if (!settings) return;
    try {
      const run = (await this.qualifiedEarlyRun(built)) ?? (await runChecker(this.attempt, built, settings.timeoutMs, this.attempt.signal));
      await report(this.attempt, this.plan.layouts, settings.timeoutMs, run);
    } finally {
      await this.drop("the import check ended");
    }
  }

  /** Stops an early run the build will not use (the build failed, or it ended). */
  async drop(why: string): Promise<void> {
    await this.early?.run.drop(why);
  }

  private async qualifiedEarlyRun(built: string): Promise<CheckRun | undefined> {
    if (!this.early) return undefined;
    const { builder } = this.attempt.deps;
    const [checked, final] = await Promise.all([builder.contentId(this.early.image), builder.contentId(built)]);
    if (checked !== undefined && checked === final) return this.early.run.result();
    this.attempt.logger.warn({ step: this.plan.filesFinalStep, image: this.early.image }, "the early import check ran on an image without the built image's layers; checking the built image");
    await this.early.run.drop("its image does not have the built image's layers");
    return undefined;
  }
}

async function runChecker(attempt: Attempt, image: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<CheckRun> {
  const { deps, config } = attempt;
  const started = performance.now();
  const result = await deps.builder.run({
    image,
    command: importCheckCommand(config.entry),
    env: { PYTHONDONTWRITEBYTECODE: "1" },
    timeoutMs,
    ...(deps.buildMemoryBytes ? { memoryBytes: deps.buildMemoryBytes } : {}),
    ...(deps.buildCpuQuota ? { cpuQuota: deps.buildCpuQuota } : {}),
    ...withSignal(signal),
  });
  return { result, ms: Math.round(performance.now() - started) };
}

async function report(attempt: Attempt, layouts: readonly string[] | undefined, timeoutMs: number, { result, ms, step }: CheckRun): Promise<void> {
  const { config } = attempt;
  const log = (line: string) => void attempt.log.build(`import check: ${line}`);
  if (result.timedOut) return log(`skipped: it did not finish within ${timeoutMs / 1000} s (IMPORT_CHECK_TIMEOUT_SECONDS)`);
  if (result.exitCode === 127) return log(`skipped: the image has no python3 (${ms} ms)`);
  const parsed = parseImportReport(result.stdout);
  if (!parsed) return log(`skipped: python3 in the image exited ${result.exitCode} without a report: ${lastLine(result.stderr)}`);
  if (parsed.skipped) return log(`skipped: ${parsed.skipped}`);
  const where = dependencyFileOf(Boolean(config.dockerfile), layouts);
  for (const note of parsed.notes) log(`note: ${note}`);
  for (const optional of parsed.guarded) log(`note: ${optional.file}:${optional.line} imports "${optional.module}" under a guard (try/except ImportError, TYPE_CHECKING, or a platform or Python version test); it is not installed, the project is expected to run without it`);
  for (const missing of parsed.missing) log(describeMissing(missing, where));
  const summary = `${parsed.files} file(s), ${parsed.imports} import(s), python ${parsed.python}; ${ms} ms (checker ${parsed.ms.toFixed(1)} ms)${step ? `, on step ${step}'s image alongside the label step` : ""}`;
  if (parsed.missing.length) {
    await attempt.log.build(`import check: failed, ${parsed.missing.length} missing module(s); ${summary}; nothing is pushed`);
    throw missingDependencyError(parsed, where);
  }
  await attempt.log.build(`import check: passed, ${summary}`);
}

function lastLine(text: string): string {
  return text.trim().split("\n").at(-1)?.slice(0, 500) || "(no output)";
}
