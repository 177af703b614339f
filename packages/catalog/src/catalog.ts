import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { BuilderError, describeIssues, toFieldIssues, type FieldIssue } from "@m1l0/config";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { isImageReference } from "@m1l0/config";

export type Resource = "cpu" | "gpu";

export interface CatalogEntry {
  framework: string;
  /** framework versions matched exactly; `"*"` = any version, or none given */
  versions: string[];
  /** Python versions ("3.N") that `python3` in the image is */
  pyversions: string[];
  resource: Resource;
  /** image template; `{version}` and `{pyversion}` are substituted */
  image: string;
  note?: string;
}

export interface Catalog {
  entries: CatalogEntry[];
  /** public image → local stand-in, e.g. "python:3.11-slim" → "m1l0-local/python:3.11-bookworm" */
  imageOverrides: Record<string, string>;
}

export interface BaseImageQuery {
  framework: string;
  version?: string;
  pyversion: string;
  resource: Resource;
}

export interface ResolvedBase {
  /** what the Dockerfile's FROM uses: the catalog image after overrides */
  image: string;
  /** the catalog's (public) image */
  publicImage: string;
}

/** The catalog shipped with this package (resolved next to src/ and dist/ alike). */
export const DEFAULT_CATALOG_FILE = fileURLToPath(new URL("../catalog.yaml", import.meta.url));
/** Overrides mapping public images to the stand-ins scripts/base-images.sh builds locally. */
export const LOCAL_OVERRIDES_FILE = fileURLToPath(new URL("../local-overrides.yaml", import.meta.url));
/** Entries served only by images built here (`scripts/base-images.sh pytorch`), added to the public catalog. */
export const LOCAL_ADDITIONS_FILE = fileURLToPath(new URL("../local-additions.yaml", import.meta.url));

/** A catalog or overrides file that cannot be read, parsed or validated. */
export class CatalogFileError extends Error {
  readonly file: string;
  readonly issues: FieldIssue[];

  constructor(file: string, message: string, issues: FieldIssue[] = [], options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CatalogFileError";
    this.file = file;
    this.issues = issues;
  }
}

const WILDCARD = "*";
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;
const PLACEHOLDER = /\{[^{}]*\}/g;
const KNOWN_PLACEHOLDERS = new Set(["{version}", "{pyversion}"]);

const yamlString = (what: string) =>
  z.string({
    error: (issue) => (issue.input === undefined ? "is required" : `must be a string: quote ${what} in YAML (e.g. "3.10", not 3.10)`),
  });

const entrySchema = z
  .strictObject({
    framework: z.string({ error: "is required" }).regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "must be a lowercase framework name such as tensorflow"),
    versions: z
      .array(yamlString("versions").regex(/^(?:\*|[A-Za-z0-9][A-Za-z0-9._+-]{0,31})$/, 'must be a version such as "2.6.0", or "*"'), {
        error: "must be a list of versions",
      })
      .min(1, "must list at least one version (or \"*\")"),
    pyversions: z
      .array(yamlString("pyversions").regex(/^3\.\d{1,2}$/, 'must be a Python version such as "3.11"'), { error: "must be a list of Python versions" })
      .min(1, "must list at least one Python version"),
    resource: z.enum(["cpu", "gpu"], { error: "must be one of: cpu, gpu" }),
    image: z.string({ error: "is required" }).min(1, "must not be empty").max(512, "must be at most 512 characters"),
    note: z
      .string({ error: "must be a string" })
      .max(500, "must be at most 500 characters")
      .refine((value) => !CONTROL_CHARS.test(value), "must not contain control characters or line breaks")
      .optional(),
  })
  .superRefine((entry, ctx) => {
    if (entry.versions.includes(WILDCARD) && entry.versions.length > 1) {
      ctx.addIssue({ code: "custom", path: ["versions"], message: 'must be either ["*"] or a list of versions, not both' });
    }
    const placeholders = entry.image.match(PLACEHOLDER) ?? [];
    const unknown = placeholders.filter((p) => !KNOWN_PLACEHOLDERS.has(p));
    if (unknown.length > 0 || /[{}]/.test(entry.image.replace(PLACEHOLDER, ""))) {
      ctx.addIssue({ code: "custom", path: ["image"], message: "may only use the placeholders {version} and {pyversion}" });
      return;
    }
    if (entry.versions.includes(WILDCARD) && entry.image.includes("{version}")) {
      ctx.addIssue({ code: "custom", path: ["image"], message: 'must not use {version} when versions is ["*"] (the version may be absent)' });
      return;
    }
    for (const version of entry.versions) {
      for (const pyversion of entry.pyversions) {
        const image = render(entry.image, version === WILDCARD ? undefined : version, pyversion);
        if (!isImageReference(image)) {
          ctx.addIssue({ code: "custom", path: ["image"], message: `renders to ${JSON.stringify(image)}, which is not a valid image reference` });
          return;
        }
      }
    }
  });

const entryKey = (entry: CatalogEntry, version: string, pyversion: string): string => [entry.framework, version, pyversion, entry.resource].join("\u0000");

function describeKey(entry: CatalogEntry, version: string, pyversion: string): string {
  return `${entry.framework} ${version === WILDCARD ? "(any version)" : version} with python ${pyversion} on ${entry.resource}`;
}

/** The first entry (index into `entries`) providing a combination an earlier entry already provides, with that earlier index. */
function findDuplicate(entries: readonly CatalogEntry[]): { index: number; previous: number; what: string } | undefined {
  const seen = new Map<string, number>();
  for (const [index, entry] of entries.entries()) {
    for (const version of entry.versions) {
      for (const pyversion of entry.pyversions) {
        const key = entryKey(entry, version, pyversion);
        const previous = seen.get(key);
        if (previous !== undefined && previous !== index) return { index, previous, what: describeKey(entry, version, pyversion) };
        seen.set(key, index);
      }
    }
  }
  return undefined;
}

const catalogFileSchema = z
  .strictObject({
    entries: z.array(entrySchema, { error: "must be a list of entries" }).min(1, "must list at least one entry"),
  })
  .superRefine((file, ctx) => {
    const duplicate = findDuplicate(file.entries);
    if (duplicate) {
      ctx.addIssue({ code: "custom", path: ["entries", duplicate.index], message: `${duplicate.what} is already provided by entries.${duplicate.previous}` });
    }
  });

const overridesFileSchema = z
  .strictObject({
    images: z.record(z.string(), z.string({ error: "must be an image reference (a string)" }), { error: "must be a mapping of public image to local image" }).nullable().optional(),
  })
  .superRefine((file, ctx) => {
    for (const [from, to] of Object.entries(file.images ?? {})) {
      if (!isImageReference(from)) ctx.addIssue({ code: "custom", path: ["images", from], message: "the public image is not a valid image reference" });
      if (!isImageReference(to)) ctx.addIssue({ code: "custom", path: ["images", from], message: `${JSON.stringify(to)} is not a valid image reference` });
    }
  });

function readYaml(file: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (cause) {
    throw new CatalogFileError(file, `cannot read ${what} ${file}: ${(cause as Error).message}`, [], { cause });
  }
  try {
    return parseYaml(text, { maxAliasCount: 100 }) as unknown;
  } catch (cause) {
    throw new CatalogFileError(file, `${what} ${file} is not valid YAML: ${(cause as Error).message}`, [{ field: "(file)", message: "is not valid YAML" }], {
      cause,
    });
  }
}

function validate<T>(schema: z.ZodType<T>, data: unknown, file: string, what: string): T {
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new CatalogFileError(file, `invalid ${what} ${file}: must be a YAML mapping`, [{ field: "(file)", message: "must be a YAML mapping" }]);
  }
  const result = schema.safeParse(data);
  if (!result.success) {
    const issues = toFieldIssues(result.error);
    throw new CatalogFileError(file, `invalid ${what} ${file}: ${describeIssues(issues)}`, issues, { cause: result.error });
  }
  return result.data;
}

/** The catalog settings API and worker read from their environment. */
export interface CatalogEnv {
  CATALOG_FILE?: string | undefined;
  CATALOG_ADDITIONS_FILE?: string | undefined;
  CATALOG_OVERRIDES_FILE?: string | undefined;
}

/** The one way a process loads its catalog: CATALOG_FILE (or the shipped one), plus CATALOG_ADDITIONS_FILE and CATALOG_OVERRIDES_FILE. */
export function catalogFromEnv(env: CatalogEnv): Catalog {
  return loadCatalog({
    ...(env.CATALOG_FILE ? { catalogFile: env.CATALOG_FILE } : {}),
    ...(env.CATALOG_ADDITIONS_FILE ? { additionsFile: env.CATALOG_ADDITIONS_FILE } : {}),
    ...(env.CATALOG_OVERRIDES_FILE ? { overridesFile: env.CATALOG_OVERRIDES_FILE } : {}),
  });
}

function readEntries(file: string, what: string): CatalogEntry[] {
  const parsed = validate(catalogFileSchema, readYaml(file, what), file, what);
  return parsed.entries.map((entry) => {
    const copy: CatalogEntry = {
      framework: entry.framework,
      versions: [...entry.versions],
      pyversions: [...entry.pyversions],
      resource: entry.resource,
      image: entry.image,
    };
    if (entry.note !== undefined) copy.note = entry.note;
    return copy;
  });
}

/** Additions may add combinations, never replace one the catalog has (that is what CATALOG_FILE or an override is for). */
function addEntries(entries: CatalogEntry[], additions: CatalogEntry[], file: string): CatalogEntry[] {
  const merged = [...entries, ...additions];
  const duplicate = findDuplicate(merged);
  if (duplicate) {
    const field = `entries.${duplicate.index - entries.length}`;
    const message = `${duplicate.what} is already provided by the catalog's entries.${duplicate.previous}; an addition may only add combinations`;
    throw new CatalogFileError(file, `invalid catalog additions file ${file}: ${field} ${message}`, [{ field, message }]);
  }
  return merged;
}

/**
 * Loads and validates the catalog: the shipped catalog.yaml, or `catalogFile` instead of it,
 * then the entries of `additionsFile` (same format; none by default), plus image overrides from `overridesFile` (none by default). Throws CatalogFileError naming
 * the file and each offending field.
 */
export function loadCatalog(options: { catalogFile?: string; additionsFile?: string; overridesFile?: string } = {}): Catalog {
  const catalogFile = options.catalogFile ?? DEFAULT_CATALOG_FILE;
  let entries = readEntries(catalogFile, "catalog file");
  if (options.additionsFile !== undefined) {
    entries = addEntries(entries, readEntries(options.additionsFile, "catalog additions file"), options.additionsFile);
  }

  const imageOverrides: Record<string, string> = {};
  if (options.overridesFile !== undefined) {
    const overrides = validate(overridesFileSchema, readYaml(options.overridesFile, "overrides file"), options.overridesFile, "overrides file");
    for (const [from, to] of Object.entries(overrides.images ?? {})) imageOverrides[from] = to;
  }
  return { entries, imageOverrides };
}

function render(template: string, version: string | undefined, pyversion: string): string {
  return template.replaceAll("{pyversion}", pyversion).replaceAll("{version}", version ?? "");
}

const list = (values: readonly string[]): string => values.join(", ");
const unique = (values: readonly string[]): string[] => [...new Set(values)];

function describeEntry(entry: CatalogEntry): string {
  const versions = entry.versions.includes(WILDCARD) ? "(any version)" : list(entry.versions);
  return `${entry.framework} ${versions} with python ${list(entry.pyversions)} on ${entry.resource}`;
}

/** One human-readable line per catalog entry, e.g. `tensorflow 2.4.0, 2.5.0, 2.6.0 with python 3.6 on cpu`. */
export function supportedCombinations(catalog: Catalog): string[] {
  return catalog.entries.map(describeEntry);
}

function versionsOf(entries: readonly CatalogEntry[]): string[] {
  return unique(entries.flatMap((entry) => entry.versions)).filter((version) => version !== WILDCARD);
}

/**
 * Picks the base image for a request. An entry listing the exact version wins over a `"*"` entry;
 * otherwise the first matching entry wins. Throws UNSUPPORTED_BASE naming the offending field(s)
 * and listing what the catalog does support.
 */
export function resolveBaseImage(catalog: Catalog, query: BaseImageQuery): ResolvedBase {
  const { framework, version, pyversion, resource } = query;
  const forFramework = catalog.entries.filter((entry) => entry.framework === framework);
  if (forFramework.length === 0) {
    const frameworks = unique(catalog.entries.map((entry) => entry.framework)).sort();
    throw new BuilderError(
      "UNSUPPORTED_BASE",
      `unsupported base image: unknown framework ${JSON.stringify(framework)}. Supported frameworks: ${list(frameworks)}`,
      { issues: [{ field: "framework", message: `must be one of: ${list(frameworks)}` }] },
    );
  }

  const exact = (entry: CatalogEntry) => version !== undefined && entry.versions.includes(version);
  const matchesVersion = (entry: CatalogEntry) => exact(entry) || entry.versions.includes(WILDCARD);
  const matchesPython = (entry: CatalogEntry) => entry.pyversions.includes(pyversion);
  const matchesResource = (entry: CatalogEntry) => entry.resource === resource;

  const matches = forFramework.filter((entry) => matchesVersion(entry) && matchesPython(entry) && matchesResource(entry));
  const entry = matches.find(exact) ?? matches[0];
  if (entry) {
    const publicImage = render(entry.image, version, pyversion);
    const image = catalog.imageOverrides[publicImage] ?? publicImage;
    for (const reference of [publicImage, image]) {
      if (!isImageReference(reference)) {
        throw new BuilderError("INTERNAL", `the catalog maps ${framework} to ${JSON.stringify(reference)}, which is not a valid image reference`, {
          retryable: false,
        });
      }
    }
    return { image, publicImage };
  }

  throw unsupported(query, forFramework, { matchesVersion, matchesPython, matchesResource });
}

function unsupported(
  query: BaseImageQuery,
  forFramework: CatalogEntry[],
  match: Record<"matchesVersion" | "matchesPython" | "matchesResource", (entry: CatalogEntry) => boolean>,
): BuilderError {
  const { framework, version, pyversion, resource } = query;
  const issues: FieldIssue[] = [];
  const versionText = version === undefined ? framework : `${framework} ${version}`;

  // Narrow field by field; the first field that empties the candidates is the culprit. Fields
  // after it are reported too when nothing in this framework offers their value at all.
  const byVersion = forFramework.filter(match.matchesVersion);
  if (byVersion.length === 0) {
    const available = versionsOf(forFramework);
    issues.push({
      field: "version",
      message:
        version === undefined
          ? `is required for ${framework} (available: ${list(available)})`
          : `${JSON.stringify(version)} is not available for ${framework} (available: ${list(available)})`,
    });
  }
  const byPython = byVersion.filter(match.matchesPython);
  if (byVersion.length > 0 && byPython.length === 0) {
    issues.push({
      field: "pyversion",
      message: `python ${JSON.stringify(pyversion)} is not available for ${versionText} (available: ${list(unique(byVersion.flatMap((e) => e.pyversions)))})`,
    });
  } else if (byVersion.length === 0 && !forFramework.some(match.matchesPython)) {
    issues.push({
      field: "pyversion",
      message: `python ${JSON.stringify(pyversion)} is not available for ${framework} (available: ${list(unique(forFramework.flatMap((e) => e.pyversions)))})`,
    });
  }
  if (byPython.length > 0) {
    issues.push({
      field: "resource",
      message: `${JSON.stringify(resource)} is not available for ${versionText} with python ${pyversion} (available: ${list(unique(byPython.map((e) => e.resource)))})`,
    });
  } else if (!forFramework.some(match.matchesResource)) {
    issues.push({
      field: "resource",
      message: `${JSON.stringify(resource)} is not available for ${framework} (available: ${list(unique(forFramework.map((e) => e.resource)))})`,
    });
  }

  const requested = `${versionText} with python ${pyversion} on ${resource}`;
  const notes = unique(forFramework.flatMap((entry) => (entry.note ? [entry.note] : [])));
  const message =
    `unsupported base image: no image for ${requested} (${describeIssues(issues)}). ` +
    `Supported for ${framework}: ${forFramework.map(describeEntry).join("; ")}.` +
    (notes.length > 0 ? ` Notes: ${notes.join("; ")}.` : "");
  return new BuilderError("UNSUPPORTED_BASE", message, { issues });
}
