import { BuilderError } from "@m1l0/config";
import { contextHasFile, type ContextFilter } from "@m1l0/context";
import { APT_TXT_MAX_BYTES, parseAptTxt, type DockerfileSpec, type Layout } from "@m1l0/dockerfile";
import { readFile, stat } from "node:fs/promises";
import path from "node:path";

/** What the source's root selects for the generated Dockerfile. */
export interface DetectedLayouts {
  /** in layer order; empty: code only */
  names: Layout[];
  spec: Pick<DockerfileSpec, "hasRequirements" | "aptPackages"> & { project?: { pyproject: boolean } };
  /** the log line */
  description: string;
}

const CONDA_FILES = ["environment.yml", "environment.yaml"];

/**
 * Reads the layout files at the source's root, as repo2docker does (files excluded by the
 * ignores do not count). Refused before anything is built: environment.yml (no catalog base
 * has conda) and an apt.txt line that is not a package name.
 */
export async function detectLayouts(root: string, filter: ContextFilter, baseImage: string): Promise<DetectedLayouts> {
  const has = (name: string) => contextHasFile(root, filter, name);
  for (const name of CONDA_FILES) {
    if (await has(name)) {
      throw new BuilderError(
        "UNSUPPORTED_LAYOUT",
        `the source has ${name}, which needs conda, and the base image ${baseImage} has no conda: ` +
          `list the pip packages in requirements.txt (and Debian packages in apt.txt), then remove ${name} or add it to "ignores"; ` +
          `or build from a conda image with your own Dockerfile ("dockerfile" field)`,
      );
    }
  }
  const aptPackages = (await has("apt.txt")) ? parseAptTxt(await readAptTxt(root)) : undefined;
  const hasRequirements = await has("requirements.txt");
  const pyprojectFile = await has("pyproject.toml");
  // a pyproject.toml of tool settings only (black, ruff, pytest…) is no project to install
  const pyproject = pyprojectFile && (await declaresProject(root));
  const setupPy = await has("setup.py");

  const names: Layout[] = [];
  if (aptPackages && aptPackages.length > 0) names.push("apt.txt");
  if (hasRequirements) names.push("requirements.txt");
  if (pyproject) names.push("pyproject.toml");
  if (setupPy) names.push("setup.py");
  const details = [
    ...(aptPackages ? [aptPackages.length > 0 ? `apt.txt (${aptPackages.join(", ")})` : "apt.txt (lists no packages: no apt layer)"] : []),
    ...(hasRequirements ? ["requirements.txt"] : []),
    ...(pyproject ? ["pyproject.toml (pip install .; static dependencies before the code)"] : []),
    ...(pyprojectFile && !pyproject ? ["pyproject.toml (no [project] or [build-system] table: tool settings only, not installed)"] : []),
    ...(setupPy ? [pyproject ? "setup.py" : "setup.py (pip install . after the code)"] : []),
  ];
  return {
    names,
    spec: {
      hasRequirements,
      ...(aptPackages && aptPackages.length > 0 ? { aptPackages } : {}),
      ...(pyproject || setupPy ? { project: { pyproject } } : {}),
    },
    description: `layout: ${details.length > 0 ? details.join(", ") : "none found (code only: no apt.txt, requirements.txt, pyproject.toml or setup.py)"}`,
  };
}

const PYPROJECT_MAX_BYTES = 1024 * 1024;
/** A [project] or [build-system] table header (TOML tables are headers on their own line). */
const PROJECT_TABLE = /^[ \t]*\[[ \t]*(project|build-system)[ \t]*\][ \t]*(#.*)?$/m;

async function declaresProject(root: string): Promise<boolean> {
  const file = path.join(root, "pyproject.toml");
  if ((await stat(file)).size > PYPROJECT_MAX_BYTES) throw new BuilderError("INVALID_DEPENDENCY_FILE", `pyproject.toml is larger than ${PYPROJECT_MAX_BYTES / 1024 / 1024} MiB`);
  return PROJECT_TABLE.test(await readFile(file, "utf8"));
}

async function readAptTxt(root: string): Promise<string> {
  const file = path.join(root, "apt.txt");
  // contextHasFile saw a regular file (no link); the size is checked before it is read
  if ((await stat(file)).size > APT_TXT_MAX_BYTES) throw new BuilderError("INVALID_DEPENDENCY_FILE", `apt.txt is larger than ${APT_TXT_MAX_BYTES / 1024} KiB`);
  return readFile(file, "utf8");
}
