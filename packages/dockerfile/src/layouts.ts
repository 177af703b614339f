import { BuilderError } from "@m1l0/config";

/**
 * The project layouts the generated Dockerfile installs, in the order their layers come (the
 * names are the files that select them, as repo2docker reads them). `environment.yml` is not
 * one: no catalog base has conda, so the worker refuses it before building.
 */
export const LAYOUTS = ["apt.txt", "requirements.txt", "pyproject.toml", "setup.py"] as const;
export type Layout = (typeof LAYOUTS)[number];

/** Debian policy §5.6.1: lowercase letters, digits, "+", "-", "."; two or more; starts alphanumeric. */
const DEBIAN_PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
const MAX_PACKAGE_NAME = 128;
export const APT_TXT_MAX_BYTES = 64 * 1024;
export const APT_TXT_MAX_PACKAGES = 500;

/** Is `name` a Debian package name (nothing else: no version, no architecture, no option)? */
export function isDebianPackageName(name: string): boolean {
  return name.length <= MAX_PACKAGE_NAME && DEBIAN_PACKAGE_NAME.test(name);
}

function aptTxtError(line: number, reason: string): BuilderError {
  return new BuilderError("INVALID_DEPENDENCY_FILE", `apt.txt line ${line}: ${reason}`);
}

/**
 * The package names of an apt.txt: one or more per line, `#` starts a comment, blank lines are
 * skipped. Every name must be a Debian package name; the first that is not fails the build
 * naming the line and why. Duplicates are dropped, first-seen order kept.
 */
export function parseAptTxt(text: string): string[] {
  if (Buffer.byteLength(text, "utf8") > APT_TXT_MAX_BYTES) {
    throw new BuilderError("INVALID_DEPENDENCY_FILE", `apt.txt is larger than ${APT_TXT_MAX_BYTES / 1024} KiB`);
  }
  const names: string[] = [];
  const seen = new Set<string>();
  for (const [index, raw] of text.replace(/^\uFEFF/, "").split(/\r?\n/).entries()) {
    const content = raw.replace(/#.*$/, "").trim();
    if (content === "") continue;
    for (const word of content.split(/[ \t]+/)) {
      if (!isDebianPackageName(word)) throw aptTxtError(index + 1, `${JSON.stringify(word.slice(0, 80))} is not a Debian package name (${nameRule(word)})`);
      if (seen.has(word)) continue;
      seen.add(word);
      names.push(word);
    }
  }
  if (names.length > APT_TXT_MAX_PACKAGES) throw new BuilderError("INVALID_DEPENDENCY_FILE", `apt.txt lists ${names.length} packages; at most ${APT_TXT_MAX_PACKAGES} are allowed`);
  return names;
}

/** Why a word is not a package name, in terms a user can act on. */
function nameRule(word: string): string {
  if (word.length > MAX_PACKAGE_NAME) return `longer than ${MAX_PACKAGE_NAME} characters`;
  if (word.length < 2) return "names are at least two characters long";
  if (!/^[a-zA-Z0-9]/.test(word)) return "names start with a letter or a digit";
  if (/[A-Z]/.test(word)) return "names are lowercase";
  if (/=/.test(word)) return "versions are not supported, list the name only";
  if (/:/.test(word)) return "architecture qualifiers are not supported, list the name only";
  return 'only lowercase letters, digits, "+", "-" and "." are allowed';
}

/**
 * One-line apt source entries (sources.list(5)); an operator setting, still checked before it
 * enters a Dockerfile. No credentials in the URI: the entries are RUN arguments, so they are in
 * the image's history (apt's auth.conf in the base image is the place for a mirror's password).
 */
const APT_SOURCE = /^deb(?: \[[a-z0-9=,._ /:-]+\])? [a-z][a-z0-9+.-]*:\/\/[^\s@]+ \S+(?: \S+)*$/i;

export function isAptSourceLine(line: string): boolean {
  return APT_SOURCE.test(line);
}

/**
 * The apt layer: a fixed POSIX shell script (it contains nothing from the source) run in exec
 * form; the apt sources and the package names are its positional arguments, so the shell never
 * parses them. With sources given, apt reads only those (a mirror, or a test's repository) for
 * this step and leaves the image's own sources.list as it was.
 */
const APT_SCRIPT = [
  "set -eu",
  'list=/tmp/m1l0-apt-sources.list; : > "$list"',
  'while [ "$1" != "--" ]; do printf "%s\\n" "$1" >> "$list"; shift; done; shift',
  'apt() { if [ -s "$list" ]; then apt-get -o "Dir::Etc::SourceList=$list" -o Dir::Etc::SourceParts=/nonexistent "$@"; else apt-get "$@"; fi; }',
  // an unreachable or broken source fails the step here (old apt ignores the option and fails at install)
  "apt -o APT::Update::Error-Mode=any update",
  'DEBIAN_FRONTEND=noninteractive apt install -y --no-install-recommends "$@"',
  'rm -rf /var/lib/apt/lists/* "$list"',
].join("\n");

export function aptRunInstruction(packages: readonly string[], sources: readonly string[]): string {
  for (const name of packages) {
    if (!isDebianPackageName(name)) throw new BuilderError("INTERNAL", `apt package ${JSON.stringify(name)} was not validated`, { retryable: false });
  }
  for (const source of sources) {
    if (!isAptSourceLine(source)) throw new BuilderError("INTERNAL", `apt source ${JSON.stringify(source)} is not a one-line "deb …" entry`, { retryable: false });
  }
  // $0 is "apt.txt": the name the shell uses in its own messages
  return `RUN ${JSON.stringify(["/bin/sh", "-c", APT_SCRIPT, "apt.txt", ...sources, "--", ...packages])}`;
}

/**
 * Installs the dependencies pyproject.toml lists statically (`[project] dependencies`) before the
 * code is copied, so that layer depends on pyproject.toml alone. Dynamic dependencies, and Python
 * without tomllib (< 3.11), leave them to `pip install .` after the code, and say so.
 */
const PYPROJECT_DEPS_SCRIPT = [
  "import subprocess, sys",
  "try:",
  "    import tomllib",
  "except ImportError:",
  '    print("m1l0: no tomllib in this Python (< 3.11): pyproject.toml dependencies install with the project, after the code"); sys.exit(0)',
  'with open("pyproject.toml", "rb") as handle:',
  "    project = tomllib.load(handle).get(\"project\") or {}",
  'deps = project.get("dependencies") or []',
  'if "dependencies" in (project.get("dynamic") or []) or not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):',
  '    print("m1l0: pyproject.toml has no static [project] dependencies: they install with the project, after the code"); sys.exit(0)',
  "if not deps:",
  '    print("m1l0: pyproject.toml lists no dependencies"); sys.exit(0)',
  'print("m1l0: installing the dependencies pyproject.toml lists, before the code: " + ", ".join(deps), flush=True)',
  'sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", "--", *deps]))',
].join("\n");

export const PYPROJECT_DEPS_RUN = `RUN ${JSON.stringify(["python3", "-c", PYPROJECT_DEPS_SCRIPT])}`;
export const PROJECT_INSTALL_RUN = `RUN ${JSON.stringify(["python3", "-m", "pip", "install", "."])}`;
