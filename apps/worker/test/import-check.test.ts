import { isBuilderError } from "@m1l0/config";
import { describe, expect, it } from "vitest";
import { dependencyFileOf, importCheckCommand, missingDependencyError, parseImportReport, type ImportReport } from "../src/import-check/index.js";
import { runInProject } from "./support/host-python.js";

// The checker the worker ships (src/import-check/check.py), run with the host's python3
// against fixture projects, exactly as the worker runs it in an image: `python3 -B -c <checker> <entry>`.
async function check(files: Record<string, string>, entry = "main.py", maxFiles?: number): Promise<ImportReport> {
  const result = await runInProject(new Map(Object.entries(files)), importCheckCommand(entry, maxFiles), { env: { PYTHONDONTWRITEBYTECODE: "1" } });
  expect(result.exitCode, result.stderr).toBe(0);
  const report = parseImportReport(result.stdout);
  expect(report, result.stdout).toBeDefined();
  return report!;
}

const modules = (items: Array<{ file: string; line: number; module: string }>) => items.map((item) => `${item.file}:${item.line} ${item.module}`);

describe("the import checker (check.py, host python3)", () => {
  it("resolves the standard library, relative imports and the project's own modules and packages", async () => {
    const report = await check({
      "main.py": "import os, json\nfrom collections import OrderedDict\nimport model\nfrom pkg import helper\nimport pkg.deep.leaf\n",
      "model.py": "import math\nfrom . import nothing_relative_at_top  # a script folder is no package: Python would fail, the checker ignores it\n",
      "pkg/__init__.py": "from .helper import run\nfrom . import deep\n",
      "pkg/helper.py": "import typing\ndef run():\n    from .deep import leaf\n    return leaf\n",
      "pkg/deep/__init__.py": "",
      "pkg/deep/leaf.py": "import itertools\n",
    });
    expect(report.missing).toEqual([]);
    expect(report.guarded).toEqual([]);
    // main, model, pkg/__init__, pkg/helper, pkg/deep/__init__, pkg/deep/leaf
    expect(report.files).toBe(6);
    expect(report.python).toMatch(/^3\.\d+/);
  });

  it("names the file, line and module of a missing import, at module level and inside functions, in project modules it reaches", async () => {
    const report = await check({
      "main.py": "import os\nimport numpy_m1l0_absent\nfrom train import fit\n\ndef plot():\n    import torchvision_m1l0_absent.transforms as t\n    return t\n",
      "train.py": "from sklearn_m1l0_absent.linear_model import LogisticRegression\nfrom utils import tools\n",
      "utils/__init__.py": "",
      "utils/tools.py": "import yaml_m1l0_absent\n",
      "unreached.py": "import never_checked_m1l0\n",
    });
    expect(modules(report.missing)).toEqual([
      "main.py:2 numpy_m1l0_absent",
      "main.py:6 torchvision_m1l0_absent",
      "train.py:1 sklearn_m1l0_absent",
      "utils/tools.py:1 yaml_m1l0_absent",
    ]);
  });

  it("honours try/except ImportError and ModuleNotFoundError guards and TYPE_CHECKING blocks: noted, not missing", async () => {
    const report = await check({
      "main.py": [
        "try:",
        "    import ujson_m1l0_absent as json",
        "except ImportError:",
        "    import json",
        "try:",
        "    from rich_m1l0_absent import print",
        "except (ModuleNotFoundError, ValueError):",
        "    pass",
        "from typing import TYPE_CHECKING",
        "if TYPE_CHECKING:",
        "    import pandas_m1l0_absent",
        "try:",
        "    import os",
        "except KeyError:",
        "    import handler_m1l0_absent",
        "",
      ].join("\n"),
    });
    expect(modules(report.guarded)).toEqual(["main.py:2 ujson_m1l0_absent", "main.py:6 rich_m1l0_absent", "main.py:11 pandas_m1l0_absent"]);
    // an import in a handler that does not catch ImportError is not guarded
    expect(modules(report.missing)).toEqual(["main.py:15 handler_m1l0_absent"]);
  });

  it("treats imports under a platform or Python version test as optional (the other branch may be this image's)", async () => {
    const report = await check({
      "main.py": [
        "import os, sys",
        "if sys.platform == 'win32':",
        "    import winreg",
        "if sys.version_info < (3, 8):",
        "    import importlib_metadata_m1l0_absent as metadata",
        "else:",
        "    from importlib import metadata",
        "if os.name == 'nt':",
        "    import msvcrt",
        "if len(sys.argv) > 1:",
        "    import plain_if_m1l0_absent",
        "",
      ].join("\n"),
    });
    expect(modules(report.guarded)).toEqual(["main.py:3 winreg", "main.py:5 importlib_metadata_m1l0_absent", "main.py:9 msvcrt"]);
    // an ordinary condition does not make an import optional
    expect(modules(report.missing)).toEqual(["main.py:11 plain_if_m1l0_absent"]);
  });

  it("never executes the project: a module that would write a file or exit is only parsed", async () => {
    const report = await check({
      "main.py": "import side\nraise SystemExit(3)\n",
      "side.py": "open('/tmp/m1l0-import-check-ran', 'w').write('ran')\nimport os\nos._exit(9)\n",
    });
    expect(report.files).toBe(2);
    expect(report.missing).toEqual([]);
  });

  it("notes a file it cannot parse and skips when the entry is not there", async () => {
    const broken = await check({ "main.py": "import helper\n", "helper.py": "def broken(:\n" });
    expect(broken.notes.join("\n")).toMatch(/cannot parse helper\.py/);
    const absent = await check({ "app.py": "" }, "main.py");
    expect(absent.skipped).toMatch(/main\.py is not at/);
  });

  it("parses at most its file budget and says so", async () => {
    const report = await check({ "main.py": "import a\nimport b\nimport c\n", "a.py": "", "b.py": "", "c.py": "import absent_m1l0\n" }, "main.py", 3);
    expect(report.files).toBe(3);
    expect(report.notes).toEqual(["stopped after 3 project files; 1 more reachable files are not checked"]);
    expect(report.missing).toEqual([]);
  });

  it("checks an entry in a subfolder against that folder, as `python3 src/main.py` would", async () => {
    const report = await check({ "src/main.py": "import lib\nimport absent_m1l0\n", "src/lib.py": "" }, "src/main.py");
    expect(modules(report.missing)).toEqual(["src/main.py:2 absent_m1l0"]);
  });
});

describe("MISSING_DEPENDENCY", () => {
  const report = (missing: ImportReport["missing"]): ImportReport => ({ python: "3.11", entry: "main.py", files: 1, imports: 1, missing, guarded: [], notes: [], ms: 1 });

  it("says which file, line and module, and what to do", () => {
    const error = missingDependencyError(report([{ file: "main.py", line: 3, module: "torchvision" }]), "requirements.txt");
    expect(isBuilderError(error) && error.code).toBe("MISSING_DEPENDENCY");
    expect(error.message).toBe('main.py:3 imports "torchvision", which is not installed in the image; add it to requirements.txt');
  });

  it("names the distribution when it differs from the import, and counts the others", () => {
    const error = missingDependencyError(report([{ file: "a.py", line: 1, module: "cv2" }, { file: "b.py", line: 2, module: "x" }]), "your Dockerfile");
    expect(error.message).toBe('a.py:1 imports "cv2", which is not installed in the image; install opencv-python (the package that provides cv2) in your Dockerfile (and 1 more: b.py:2 "x")');
  });

  it("points at the file the project declares its packages in: its Dockerfile, else requirements.txt, pyproject.toml or setup.py", () => {
    expect(dependencyFileOf(true, ["requirements.txt"])).toBe("your Dockerfile");
    expect(dependencyFileOf(false, ["apt.txt", "requirements.txt", "pyproject.toml"])).toBe("requirements.txt");
    expect(dependencyFileOf(false, ["pyproject.toml"])).toBe("pyproject.toml's [project] dependencies");
    expect(dependencyFileOf(false, ["setup.py"])).toBe("setup.py's install_requires");
    expect(dependencyFileOf(false, ["apt.txt"])).toBe("requirements.txt");
    const error = missingDependencyError(report([{ file: "main.py", line: 2, module: "torchaudio" }]), dependencyFileOf(false, ["pyproject.toml"]));
    expect(error.message).toBe('main.py:2 imports "torchaudio", which is not installed in the image; add it to pyproject.toml\'s [project] dependencies');
  });

  it("reads only a well-formed report", () => {
    expect(parseImportReport("not json")).toBeUndefined();
    expect(parseImportReport('{"python": 3}')).toBeUndefined();
    expect(parseImportReport('noise\n{"python":"3.11","entry":"main.py","ms":1}')?.missing).toEqual([]);
  });
});
