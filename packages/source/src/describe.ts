import { BuilderError } from "@m1l0/config";
import type { GitSource } from "./types.js";

const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const HAS_CONTROL_CHAR = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** For logs and messages: the source URL without credentials or query string. */
export function describeSource(source: string): string {
  let described: string;
  try {
    const url = new URL(source);
    url.username = "";
    url.password = "";
    url.search = "";
    described = url.href;
  } catch {
    described = source.replace(/\/\/[^/?#]*@/, "//").replace(/\?[^#]*/, "");
  }
  return described.replace(CONTROL_CHARS, "?");
}

function invalid(source: string, message: string): BuilderError {
  return new BuilderError("VALIDATION_FAILED", `invalid git source ${describeSource(source)}: ${message}`, {
    issues: [{ field: "source", message }],
  });
}

// git check-ref-format, roughly: no control chars, spaces, ~ ^ : ? * [ \, no "..", no "@{", not starting with "-" or "/".
const BAD_REF = /[\u0000-\u0020\u007f~^:?*[\\]|\.\.|@\{|^[-/]|\/$|\.lock$|^@$/;

/**
 * Docker's convention for git build contexts: `https://host/repo.git#ref:subdir`.
 * `ref` (branch, tag or commit sha) and `subdir` are both optional; `#:subdir` builds a
 * subdirectory of the default branch.
 */
export function parseGitSource(source: string): GitSource {
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    throw invalid(source, "is not a URL");
  }
  if (url.username || url.password) throw invalid(source, "must not embed credentials; configure a token for the host on the worker");
  let fragment: string;
  try {
    fragment = decodeURIComponent(url.hash.slice(1));
  } catch {
    throw invalid(source, "has a malformed #fragment");
  }
  url.hash = "";
  const colon = fragment.indexOf(":");
  const rawRef = colon < 0 ? fragment : fragment.slice(0, colon);
  const rawSubdir = colon < 0 ? "" : fragment.slice(colon + 1);

  const result: GitSource = { url: url.href };
  if (rawRef) {
    if (BAD_REF.test(rawRef)) throw invalid(source, `'${rawRef.replace(CONTROL_CHARS, "?")}' is not a valid git ref`);
    result.ref = rawRef;
  }
  if (rawSubdir) {
    if (HAS_CONTROL_CHAR.test(rawSubdir) || rawSubdir.includes("\\")) throw invalid(source, "the subdirectory contains invalid characters");
    const parts = rawSubdir.split("/").filter((part) => part !== "" && part !== ".");
    if (parts.some((part) => part === "..")) throw invalid(source, "the subdirectory must stay inside the repository (no '..')");
    if (parts.length > 0) result.subdir = parts.join("/");
  }
  return result;
}
