import { BuilderError } from "@m1l0/config";
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import { CompiledPattern, InvalidPatternError, isPathIgnored, type Rule, type StepCounter } from "./matcher.js";

/**
 * Docker .dockerignore semantics (our linear-time matcher, see matcher.ts): the source's own
 * `.dockerignore` patterns first, then the request's `ignores` (later patterns win).
 */
export interface ContextFilter {
  /** effective patterns in evaluation order (comments and blank lines dropped) */
  readonly patterns: readonly string[];
  /** relPath is POSIX, relative to the context root, no leading "./" */
  isIgnored(relPath: string): boolean;
  /**
   * true when relDir is ignored and no `!` exception could re-include anything below it, so a
   * walker may skip the subtree without reading it. Optional: without it a walker descends into
   * ignored directories whenever any pattern starts with `!`.
   */
  canSkipDirectory?(relDir: string): boolean;
}

export const DOCKERIGNORE_FILE = ".dockerignore";
/** A .dockerignore is a short list of patterns; a huge one is a mistake, not something to buffer. */
const MAX_DOCKERIGNORE_BYTES = 1024 * 1024;

export async function createContextFilter(root: string, ignores: readonly string[]): Promise<ContextFilter> {
  const fileLines = await readDockerignoreLines(root);
  return new DockerignoreFilter([...fileLines, ...ignores].filter(isEffectivePattern));
}

export class DockerignoreFilter implements ContextFilter {
  readonly patterns: readonly string[];
  readonly #rules: readonly Rule[];
  readonly #exceptions: readonly (readonly string[])[];

  constructor(patterns: string[]) {
    this.patterns = Object.freeze(patterns);
    const parsed = this.patterns.map(parseRule).filter((rule): rule is ParsedRule => rule !== null);
    this.#rules = parsed.map((rule) => ({ negative: rule.negative, pattern: compilePattern(rule.segments.join("/")) }));
    this.#exceptions = parsed.filter((rule) => rule.negative).map((rule) => rule.segments);
  }

  isIgnored(relPath: string, counter?: StepCounter): boolean {
    return isPathIgnored(this.#rules, relPath, counter);
  }

  canSkipDirectory(relDir: string): boolean {
    if (!this.isIgnored(relDir)) return false;
    const dirSegments = relDir.split("/");
    return !this.#exceptions.some((segments) => exceptionMayReach(segments, dirSegments));
  }
}

function compilePattern(pattern: string): CompiledPattern {
  try {
    return new CompiledPattern(pattern);
  } catch (error) {
    if (error instanceof InvalidPatternError) {
      throw new BuilderError("ARCHIVE_INVALID", `invalid ignore pattern: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/** Same test Docker applies to .dockerignore lines: `#` comments (before trimming) and blank lines are dropped. */
function isEffectivePattern(line: string): boolean {
  return !line.startsWith("#") && line.trim() !== "";
}

async function readDockerignoreLines(root: string): Promise<string[]> {
  let handle;
  try {
    // O_NOFOLLOW: a symlinked .dockerignore could otherwise read a host file.
    handle = await open(path.join(root, DOCKERIGNORE_FILE), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    if (errorCode(error) === "ENOENT") return [];
    if (errorCode(error) === "ELOOP") {
      throw new BuilderError("ARCHIVE_INVALID", `${DOCKERIGNORE_FILE} must be a regular file, not a symlink`, { cause: error });
    }
    throw new BuilderError("ARCHIVE_INVALID", `cannot read ${DOCKERIGNORE_FILE}: ${describeError(error)}`, { cause: error });
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new BuilderError("ARCHIVE_INVALID", `${DOCKERIGNORE_FILE} must be a regular file`);
    if (stats.size > MAX_DOCKERIGNORE_BYTES) {
      throw new BuilderError("ARCHIVE_INVALID", `${DOCKERIGNORE_FILE} is larger than ${MAX_DOCKERIGNORE_BYTES} bytes`);
    }
    const text = await handle.readFile("utf8");
    // Docker strips a UTF-8 byte order mark from the first line.
    return text.replace(/^\uFEFF/, "").split(/\r?\n/);
  } finally {
    await handle.close();
  }
}

interface ParsedRule {
  negative: boolean;
  segments: string[];
}

/** Docker's rule normalization (builder/dockerignore ReadAll, then patternmatcher.New): trim, `!`, clean, drop a leading `/`. */
function parseRule(line: string): ParsedRule | null {
  if (!isEffectivePattern(line)) return null;
  let pattern = line.trim();
  let negative = false;
  if (pattern.startsWith("!")) {
    negative = true;
    pattern = pattern.slice(1).trim();
  }
  if (pattern.length > 0) {
    pattern = cleanPath(pattern);
    if (pattern.length > 1 && pattern.startsWith("/")) pattern = pattern.slice(1);
  }
  if (negative) pattern = `!${pattern}`;
  pattern = cleanPath(pattern.trim());
  if (pattern === "" || pattern === "!") return null;
  // "/!x" becomes "!x" after the leading slash is removed and is an exception too (Docker quirk).
  if (pattern.startsWith("!")) return { negative: true, segments: pattern.slice(1).split("/") };
  return { negative: false, segments: pattern.split("/") };
}

function cleanPath(pattern: string): string {
  if (pattern === "") return pattern;
  return path.posix.normalize(pattern).replace(/(?<=.)\/$/, "");
}

/**
 * Conservative: false only when the exception provably matches nothing at, above or below dir.
 * Without `**`, each pattern segment matches exactly one path segment, so comparing the leading
 * segments decides it; anything this does not understand counts as reachable.
 */
function exceptionMayReach(patternSegments: readonly string[], dirSegments: readonly string[]): boolean {
  for (let index = 0; ; index++) {
    const patternSegment = patternSegments[index];
    const dirSegment = dirSegments[index];
    // The exception matches the directory itself or an ancestor, or continues below it.
    if (patternSegment === undefined || dirSegment === undefined) return true;
    if (patternSegment.includes("**")) return true;
    if (!segmentMatches(patternSegment, dirSegment)) return false;
  }
}

function segmentMatches(patternSegment: string, name: string): boolean {
  try {
    return new CompiledPattern(patternSegment).matches(name);
  } catch {
    return true;
  }
}

export function errorCode(error: unknown): string | undefined {
  return typeof error === "object" && error !== null && "code" in error && typeof error.code === "string" ? error.code : undefined;
}

export function describeError(error: unknown): string {
  return errorCode(error) ?? (error instanceof Error ? error.message : String(error));
}
