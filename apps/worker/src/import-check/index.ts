import { BuilderError } from "@m1l0/config";
import { readFileSync } from "node:fs";
import { z } from "zod";

/** The checker the worker ships (check.py next to this file; the build copies it to dist). */
export const IMPORT_CHECK_SCRIPT = readFileSync(new URL("./check.py", import.meta.url), "utf8");

/** `python3 -B -c <checker> <entry> [max files]`: the checker is passed in, the project's code never runs. */
export function importCheckCommand(entry: string, maxFiles?: number): string[] {
  return ["python3", "-B", "-c", IMPORT_CHECK_SCRIPT, entry, ...(maxFiles === undefined ? [] : [String(maxFiles)])];
}

const site = z.object({ file: z.string(), line: z.number().int(), module: z.string() });

const reportSchema = z.object({
  python: z.string(),
  entry: z.string(),
  /** the entry is not where the image's working directory says */
  skipped: z.string().optional(),
  files: z.number().int().default(0),
  imports: z.number().int().default(0),
  missing: z.array(site).default([]),
  /** missing, but inside try/except ImportError (or `if TYPE_CHECKING:`) */
  guarded: z.array(site).default([]),
  notes: z.array(z.string()).default([]),
  /** the checker's own time inside the container */
  ms: z.number(),
});

export type ImportReport = z.output<typeof reportSchema>;
export type ImportSite = z.output<typeof site>;

/** The checker's JSON (its last stdout line), or undefined when the output is not one. */
export function parseImportReport(stdout: string): ImportReport | undefined {
  const last = stdout.trim().split("\n").at(-1) ?? "";
  try {
    const parsed = reportSchema.safeParse(JSON.parse(last));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Import names whose PyPI distribution is called otherwise (the usual surprises). */
const DISTRIBUTIONS: Record<string, string> = {
  cv2: "opencv-python",
  sklearn: "scikit-learn",
  PIL: "Pillow",
  yaml: "PyYAML",
  skimage: "scikit-image",
  bs4: "beautifulsoup4",
  dateutil: "python-dateutil",
  dotenv: "python-dotenv",
  google: "the matching google-* package",
};

/** `main.py:3 imports "torchvision", which is not installed in the image; add it to requirements.txt` */
export function describeMissing(missing: ImportSite, where: DependencyFile): string {
  const distribution = DISTRIBUTIONS[missing.module];
  const what = distribution ? `${distribution} (the package that provides ${missing.module})` : "it";
  const fix = where === "your Dockerfile" ? `install ${what} in your Dockerfile` : `add ${what} to ${where}`;
  return `${missing.file}:${missing.line} imports "${missing.module}", which is not installed in the image; ${fix}`;
}

/** Where a user declares what the image installs: the file the fix goes in. */
export type DependencyFile = "requirements.txt" | "pyproject.toml's [project] dependencies" | "setup.py's install_requires" | "your Dockerfile";

/** The dependency file of a build: its own Dockerfile, else the layout that lists Python packages (requirements.txt when none does). */
export function dependencyFileOf(customDockerfile: boolean, layouts: readonly string[] = []): DependencyFile {
  if (customDockerfile) return "your Dockerfile";
  if (layouts.includes("requirements.txt")) return "requirements.txt";
  if (layouts.includes("pyproject.toml")) return "pyproject.toml's [project] dependencies";
  if (layouts.includes("setup.py")) return "setup.py's install_requires";
  return "requirements.txt";
}

export function missingDependencyError(report: ImportReport, where: DependencyFile): BuilderError {
  const [first, ...rest] = report.missing;
  if (!first) throw new Error("missingDependencyError needs at least one missing import");
  const more = rest.length ? ` (and ${rest.length} more: ${rest.map((item) => `${item.file}:${item.line} "${item.module}"`).join(", ")})` : "";
  return new BuilderError("MISSING_DEPENDENCY", `${describeMissing(first, where)}${more}`);
}
