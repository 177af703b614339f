import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BuilderError, parseBuildConfig } from "@m1l0/config";
import { afterAll, describe, expect, it } from "vitest";
import {
  CatalogFileError,
  DEFAULT_CATALOG_FILE,
  LOCAL_ADDITIONS_FILE,
  LOCAL_OVERRIDES_FILE,
  isImageReference,
  loadCatalog,
  resolveBaseImage,
  supportedCombinations,
  type BaseImageQuery,
} from "../src/index.js";

const dir = mkdtempSync(join(tmpdir(), "m1l0-catalog-"));
let fileCount = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));
function writeYaml(text: string): string {
  const file = join(dir, `file-${fileCount++}.yaml`);
  writeFileSync(file, text);
  return file;
}

function rejection(fn: () => unknown): BuilderError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(BuilderError);
    return error as BuilderError;
  }
  throw new Error("expected a BuilderError");
}

function fileRejection(fn: () => unknown): CatalogFileError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(CatalogFileError);
    return error as CatalogFileError;
  }
  throw new Error("expected a CatalogFileError");
}

const catalog = loadCatalog();
const query = (overrides: Partial<BaseImageQuery>): BaseImageQuery => ({ framework: "tensorflow", version: "2.6.0", pyversion: "3.6", resource: "cpu", ...overrides });

describe("default catalog", () => {
  it("is shipped next to the package and loads", () => {
    expect(DEFAULT_CATALOG_FILE).toMatch(/packages\/catalog\/catalog\.yaml$/);
    expect(LOCAL_OVERRIDES_FILE).toMatch(/packages\/catalog\/local-overrides\.yaml$/);
    expect(catalog.entries.length).toBeGreaterThan(5);
    expect(catalog.imageOverrides).toEqual({});
  });

  it("resolves the original service's sample config (tensorflow 2.6.0, python 3.6, cpu)", () => {
    const config = parseBuildConfig({
      service: "dockerhub",
      repository: "m1l0/mnist",
      source: "https://github.com/m1l0ai/mnist.git",
      framework: "tensorflow",
      version: "2.6.0",
      pyversion: "3.6",
      resource: "cpu",
    });
    const resolved = resolveBaseImage(catalog, { framework: config.framework, version: config.version, pyversion: config.pyversion, resource: config.resource });
    expect(resolved).toEqual({ image: "tensorflow/tensorflow:2.6.0", publicImage: "tensorflow/tensorflow:2.6.0" });
    expect(resolveBaseImage(catalog, query({ version: "2.4.0" })).image).toBe("tensorflow/tensorflow:2.4.0");
  });

  it("resolves gpu variants", () => {
    expect(resolveBaseImage(catalog, query({ resource: "gpu" })).image).toBe("tensorflow/tensorflow:2.6.0-gpu");
    expect(resolveBaseImage(catalog, query({ version: "2.16.1", pyversion: "3.11", resource: "gpu" })).image).toBe("tensorflow/tensorflow:2.16.1-gpu");
    expect(resolveBaseImage(catalog, { framework: "pytorch", version: "2.5.1", pyversion: "3.11", resource: "gpu" }).image).toBe(
      "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
    );
    expect(resolveBaseImage(catalog, { framework: "pytorch", version: "2.5.1", pyversion: "3.11", resource: "cpu" }).image).toBe(
      "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
    );
  });

  it("resolves plain python for any (or no) version, cpu only", () => {
    expect(resolveBaseImage(catalog, { framework: "python", pyversion: "3.11", resource: "cpu" }).image).toBe("python:3.11-slim");
    expect(resolveBaseImage(catalog, { framework: "python", version: "whatever", pyversion: "3.13", resource: "cpu" }).image).toBe("python:3.13-slim");
    const error = rejection(() => resolveBaseImage(catalog, { framework: "python", pyversion: "3.11", resource: "gpu" }));
    expect(error.code).toBe("UNSUPPORTED_BASE");
    expect(error.issues?.map((i) => i.field)).toEqual(["resource"]);
    expect(error.message).toContain("python (any version) with python 3.8, 3.9, 3.10, 3.11, 3.12, 3.13 on cpu");
    expect(error.message).toContain("no official image has both CUDA and Python");
  });

  it("renders every listed combination to a valid image reference", () => {
    for (const entry of catalog.entries) {
      for (const version of entry.versions) {
        for (const pyversion of entry.pyversions) {
          const resolved = resolveBaseImage(catalog, {
            framework: entry.framework,
            ...(version === "*" ? {} : { version }),
            pyversion,
            resource: entry.resource,
          });
          expect(isImageReference(resolved.image)).toBe(true);
        }
      }
    }
  });

  it("describes supported combinations one line per entry", () => {
    const lines = supportedCombinations(catalog);
    expect(lines).toHaveLength(catalog.entries.length);
    expect(lines).toContain("tensorflow 2.4.0, 2.5.0, 2.6.0 with python 3.6 on cpu");
  });
});

describe("rejections", () => {
  it("unknown framework lists the frameworks", () => {
    const error = rejection(() => resolveBaseImage(catalog, query({ framework: "scikit-learn" })));
    expect(error.code).toBe("UNSUPPORTED_BASE");
    expect(error.httpStatus).toBe(400);
    expect(error.issues).toEqual([{ field: "framework", message: "must be one of: python, pytorch, tensorflow" }]);
    expect(error.message).toContain('unknown framework "scikit-learn"');
    expect(error.message).toContain("Supported frameworks: python, pytorch, tensorflow");
  });

  it("unknown version lists what the framework supports", () => {
    const error = rejection(() => resolveBaseImage(catalog, query({ version: "9.9.9" })));
    expect(error.code).toBe("UNSUPPORTED_BASE");
    expect(error.issues?.map((i) => i.field)).toEqual(["version"]);
    expect(error.issues?.[0]?.message).toContain('"9.9.9" is not available for tensorflow');
    expect(error.message).toContain("Supported for tensorflow: tensorflow 2.4.0, 2.5.0, 2.6.0 with python 3.6 on cpu;");
    expect(error.message).toContain("tensorflow 2.14.0, 2.15.0, 2.16.1 with python 3.11 on gpu");
    expect(error.message).not.toContain("pytorch 2.");
  });

  it("a missing version is required for versioned frameworks", () => {
    const error = rejection(() => resolveBaseImage(catalog, { framework: "pytorch", pyversion: "3.11", resource: "cpu" }));
    expect(error.issues?.[0]).toMatchObject({ field: "version" });
    expect(error.issues?.[0]?.message).toMatch(/^is required for pytorch \(available: 1\.13\.1, /);
  });

  it("unknown pyversion for a known version names pyversion and the supported list", () => {
    const error = rejection(() => resolveBaseImage(catalog, query({ pyversion: "3.11" })));
    expect(error.issues).toEqual([{ field: "pyversion", message: 'python "3.11" is not available for tensorflow 2.6.0 (available: 3.6)' }]);
    expect(error.message).toContain("Supported for tensorflow:");
    expect(error.message).toContain("tensorflow 2.7.0, 2.8.0, 2.9.1, 2.10.0 with python 3.8 on cpu");
  });

  it("names every field nothing in the framework offers", () => {
    const error = rejection(() => resolveBaseImage(catalog, { framework: "python", version: "1", pyversion: "3.2", resource: "gpu" }));
    expect(error.issues?.map((i) => i.field)).toEqual(["pyversion", "resource"]);
    const both = rejection(() => resolveBaseImage(catalog, query({ version: "0.1", pyversion: "3.2" })));
    expect(both.issues?.map((i) => i.field)).toEqual(["version", "pyversion"]);
  });
});

describe("overrides", () => {
  it("applies the shipped local overrides to FROM, keeping the public image", () => {
    const local = loadCatalog({ overridesFile: LOCAL_OVERRIDES_FILE });
    expect(local.imageOverrides).toEqual({ "python:3.11-slim": "m1l0-local/python:3.11-bookworm" });
    expect(resolveBaseImage(local, { framework: "python", pyversion: "3.11", resource: "cpu" })).toEqual({
      image: "m1l0-local/python:3.11-bookworm",
      publicImage: "python:3.11-slim",
    });
    // images without an override are untouched
    expect(resolveBaseImage(local, { framework: "python", pyversion: "3.12", resource: "cpu" }).image).toBe("python:3.12-slim");
  });

  it("accepts registry hosts with ports and rejects malformed references", () => {
    const file = writeYaml('images:\n  "tensorflow/tensorflow:2.6.0": "localhost:5000/mirror/tensorflow:2.6.0"\n');
    expect(resolveBaseImage(loadCatalog({ overridesFile: file }), query({})).image).toBe("localhost:5000/mirror/tensorflow:2.6.0");
    const bad = writeYaml('images:\n  "python:3.11-slim": "Bad Image; RUN evil"\n');
    const error = fileRejection(() => loadCatalog({ overridesFile: bad }));
    expect(error.file).toBe(bad);
    expect(error.message).toContain(bad);
    expect(error.issues[0]?.field).toBe("images.python:3.11-slim");
  });
});

describe("additions", () => {
  const torch = { framework: "pytorch", version: "1.13.1", resource: "cpu" } as const;

  it("the shipped local addition serves pytorch 1.13.1 / 3.11 / cpu from the image built here; the public entries stay", () => {
    const local = loadCatalog({ additionsFile: LOCAL_ADDITIONS_FILE, overridesFile: LOCAL_OVERRIDES_FILE });
    expect(resolveBaseImage(local, { ...torch, pyversion: "3.11" })).toEqual({ image: "m1l0-local/pytorch:1.13.1-py3.11", publicImage: "m1l0-local/pytorch:1.13.1-py3.11" });
    expect(resolveBaseImage(local, { ...torch, pyversion: "3.10" }).image).toBe("pytorch/pytorch:1.13.1-cuda11.6-cudnn8-runtime");
    expect(local.entries.length).toBe(catalog.entries.length + 1);
    // without the addition the combination is refused, naming what the public catalog has
    const error = rejection(() => resolveBaseImage(catalog, { ...torch, pyversion: "3.11" }));
    expect(error.issues).toEqual([{ field: "pyversion", message: 'python "3.11" is not available for pytorch 1.13.1 (available: 3.10)' }]);
  });

  it("may not replace a combination the catalog already has", () => {
    const file = writeYaml('entries:\n  - { framework: pytorch, versions: ["1.13.1"], pyversions: ["3.10"], resource: cpu, image: "mirror.example/pytorch:1.13.1" }\n');
    const error = fileRejection(() => loadCatalog({ additionsFile: file }));
    expect(error.file).toBe(file);
    expect(error.issues).toEqual([
      { field: "entries.0", message: expect.stringMatching(/^pytorch 1\.13\.1 with python 3\.10 on cpu is already provided by the catalog's entries\.\d+; an addition may only add combinations$/) },
    ]);
  });

  it("is validated like the catalog", () => {
    const file = writeYaml('entries:\n  - { framework: pytorch, versions: ["1.13.1"], pyversions: [3.11], resource: cpu, image: "x" }\n');
    const error = fileRejection(() => loadCatalog({ additionsFile: file }));
    expect(error.message).toContain(`invalid catalog additions file ${file}`);
    expect(error.issues[0]?.field).toBe("entries.0.pyversions.0");
  });
});

describe("catalogFile", () => {
  it("replaces the default entries", () => {
    const file = writeYaml(`
entries:
  - framework: jax
    versions: ["0.4.30"]
    pyversions: ["3.12"]
    resource: gpu
    image: "ghcr.io/example/jax:{version}-py{pyversion}"
`);
    const custom = loadCatalog({ catalogFile: file });
    expect(custom.entries).toEqual([{ framework: "jax", versions: ["0.4.30"], pyversions: ["3.12"], resource: "gpu", image: "ghcr.io/example/jax:{version}-py{pyversion}" }]);
    expect(resolveBaseImage(custom, { framework: "jax", version: "0.4.30", pyversion: "3.12", resource: "gpu" }).image).toBe("ghcr.io/example/jax:0.4.30-py3.12");
    const error = rejection(() => resolveBaseImage(custom, query({})));
    expect(error.message).toContain("Supported frameworks: jax");
  });

  it("prefers an exact version over a wildcard entry", () => {
    const file = writeYaml(`
entries:
  - { framework: python, versions: ["*"], pyversions: ["3.11"], resource: cpu, image: "python:{pyversion}-slim" }
  - { framework: python, versions: ["pinned"], pyversions: ["3.11"], resource: cpu, image: "example/python-pinned:{pyversion}" }
`);
    const custom = loadCatalog({ catalogFile: file });
    expect(resolveBaseImage(custom, { framework: "python", version: "pinned", pyversion: "3.11", resource: "cpu" }).image).toBe("example/python-pinned:3.11");
    expect(resolveBaseImage(custom, { framework: "python", version: "other", pyversion: "3.11", resource: "cpu" }).image).toBe("python:3.11-slim");
  });

  it("rejects an invalid catalog naming the file and each field", () => {
    const file = writeYaml(`
entries:
  - framework: tensorflow
    versions: [2.6]
    pyversions: [3.10]
    resource: tpu
    image: "tensorflow/tensorflow:{version}"
    colour: blue
`);
    const error = fileRejection(() => loadCatalog({ catalogFile: file }));
    expect(error.file).toBe(file);
    expect(error.message).toContain(`invalid catalog file ${file}`);
    const fields = error.issues.map((issue) => issue.field);
    expect(fields).toEqual(expect.arrayContaining(["entries.0.versions.0", "entries.0.pyversions.0", "entries.0.resource", "entries.0.colour"]));
    expect(error.message).toContain('entries.0.pyversions.0: must be a string: quote pyversions in YAML (e.g. "3.10", not 3.10)');
    expect(error.message).toContain("entries.0.resource: must be one of: cpu, gpu");
    expect(error.message).toContain("entries.0.colour: is not a known field");
  });

  it("rejects bad templates, wildcard misuse and duplicates", () => {
    const badTemplate = writeYaml('entries:\n  - { framework: x, versions: ["1"], pyversions: ["3.11"], resource: cpu, image: "x:{ver}" }\n');
    expect(fileRejection(() => loadCatalog({ catalogFile: badTemplate })).issues).toEqual([
      { field: "entries.0.image", message: "may only use the placeholders {version} and {pyversion}" },
    ]);
    const wildcard = writeYaml('entries:\n  - { framework: x, versions: ["*"], pyversions: ["3.11"], resource: cpu, image: "x:{version}" }\n');
    expect(fileRejection(() => loadCatalog({ catalogFile: wildcard })).issues[0]?.field).toBe("entries.0.image");
    const invalidImage = writeYaml('entries:\n  - { framework: x, versions: ["1+local"], pyversions: ["3.11"], resource: cpu, image: "x:{version}" }\n');
    expect(fileRejection(() => loadCatalog({ catalogFile: invalidImage })).message).toContain('renders to "x:1+local", which is not a valid image reference');
    const duplicate = writeYaml(`
entries:
  - { framework: x, versions: ["1", "2"], pyversions: ["3.11"], resource: cpu, image: "x:{version}" }
  - { framework: x, versions: ["2"], pyversions: ["3.11"], resource: cpu, image: "y:{version}" }
`);
    expect(fileRejection(() => loadCatalog({ catalogFile: duplicate })).issues).toEqual([
      { field: "entries.1", message: "x 2 with python 3.11 on cpu is already provided by entries.0" },
    ]);
  });

  it("rejects unreadable, non-YAML and non-mapping files", () => {
    const missing = join(dir, "missing.yaml");
    expect(fileRejection(() => loadCatalog({ catalogFile: missing })).message).toContain(`cannot read catalog file ${missing}`);
    const broken = writeYaml("entries: [\n");
    expect(fileRejection(() => loadCatalog({ catalogFile: broken })).message).toContain(`catalog file ${broken} is not valid YAML`);
    const list = writeYaml("- a\n- b\n");
    expect(fileRejection(() => loadCatalog({ catalogFile: list })).message).toBe(`invalid catalog file ${list}: must be a YAML mapping`);
  });
});

describe("isImageReference", () => {
  it("accepts real references and rejects anything else", () => {
    for (const ok of ["python:3.11-slim", "tensorflow/tensorflow:2.6.0-gpu", "localhost:5000/a/b:c", "m1l0-local/python:3.11-bookworm", `busybox@sha256:${"a".repeat(64)}`]) {
      expect(isImageReference(ok), ok).toBe(true);
    }
    for (const bad of ["", "Python:3", "python:3.11 AS x", "python:$TAG", "--platform=x python", "python:3.11\nRUN evil", "a//b", "python:"]) {
      expect(isImageReference(bad), bad).toBe(false);
    }
  });
});
