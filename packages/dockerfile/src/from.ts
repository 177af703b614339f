/**
 * Which images does a user's Dockerfile make the daemon pull? A small, strict reader of the
 * Dockerfile grammar (moby/buildkit's parser rules) that extracts every external image: each
 * `FROM` (after ARG substitution, skipping `scratch` and earlier stage names), `COPY --from=<image>`,
 * and a `# syntax=` frontend. Anything it cannot resolve with certainty is refused, never guessed:
 * the caller treats an UnresolvableDockerfile as "not allowed".
 */

export interface BaseImage {
  /** the text as written after substitution, e.g. "python:3.11" */
  reference: string;
  /** registry host[:port], normalised: "docker.io" for Docker Hub */
  registry: string;
  /** fully-qualified repository, e.g. "docker.io/library/python" */
  repository: string;
  /** 1-based line of the instruction */
  line: number;
  /** which instruction named it */
  via: "FROM" | "COPY --from" | "syntax";
}

export class UnresolvableDockerfile extends Error {
  readonly line: number;
  constructor(line: number, message: string) {
    super(line > 0 ? `line ${line}: ${message}` : message);
    this.name = "UnresolvableDockerfile";
    this.line = line;
  }
}

interface Instruction {
  keyword: string;
  /** arguments with line continuations joined */
  args: string;
  line: number;
}

const DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;

/** Splits a Dockerfile into instructions: parser directives, comments, continuations, the escape character. */
function readInstructions(text: string): { instructions: Instruction[]; directives: Map<string, { value: string; line: number }> } {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n|\r/);
  const directives = new Map<string, { value: string; line: number }>();
  let index = 0;
  // Parser directives: only at the very top, until the first line that is not one.
  for (; index < lines.length; index++) {
    const match = DIRECTIVE.exec(lines[index]!.trim());
    if (!match) break;
    const key = match[1]!.toLowerCase();
    // a repeated directive makes the rest of the block plain comments (moby); treat it as unresolvable instead
    if (directives.has(key)) throw new UnresolvableDockerfile(index + 1, `parser directive "${key}" appears twice`);
    directives.set(key, { value: match[2]!, line: index + 1 });
  }
  const escapeValue = directives.get("escape")?.value ?? "\\";
  if (escapeValue !== "\\" && escapeValue !== "`") throw new UnresolvableDockerfile(directives.get("escape")!.line, `invalid escape directive "${escapeValue}"`);
  const escape = escapeValue;

  const instructions: Instruction[] = [];
  let pending: { parts: string[]; line: number } | null = null;
  for (; index < lines.length; index++) {
    const raw = lines[index]!;
    const trimmedStart = raw.replace(/^\s+/, "");
    // Comment lines (and blank lines) are dropped, also in the middle of a continued instruction.
    if (trimmedStart.startsWith("#") || trimmedStart.trim() === "") continue;
    let content = trimmedStart.replace(/\s+$/, "");
    // moby: the escape character at the end of a line (trailing blanks aside) continues it, whatever precedes it
    const continues = content.endsWith(escape);
    if (continues) content = content.slice(0, -1);
    if (pending) pending.parts.push(content);
    else pending = { parts: [content], line: index + 1 };
    if (!continues) {
      instructions.push(toInstruction(pending.parts.join(""), pending.line));
      pending = null;
    }
  }
  if (pending) instructions.push(toInstruction(pending.parts.join(""), pending.line));
  return { instructions, directives };
}

function toInstruction(text: string, line: number): Instruction {
  const match = /^(\S+)\s*(.*)$/s.exec(text.trim());
  if (!match) throw new UnresolvableDockerfile(line, "empty instruction");
  return { keyword: match[1]!.toUpperCase(), args: match[2]!, line };
}

/**
 * Expands `$VAR`, `${VAR}`, `${VAR:-default}` and `${VAR:+alt}` (the forms moby's classic builder
 * knows; the words may not nest variables) with the given values; an escaped `\$` is a literal `$`.
 * Any other form is refused.
 */
function substitute(text: string, vars: ReadonlyMap<string, string>, escape: string, line: number): string {
  let out = "";
  for (let index = 0; index < text.length; index++) {
    const char = text[index]!;
    if (char === escape && text[index + 1] === "$") {
      out += "$";
      index++;
      continue;
    }
    if (char !== "$") {
      out += char;
      continue;
    }
    const rest = text.slice(index + 1);
    const plain = /^[A-Za-z_][A-Za-z0-9_]*/.exec(rest);
    if (plain) {
      out += vars.get(plain[0]) ?? "";
      index += plain[0].length;
      continue;
    }
    const braced = /^\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^${}]*))?\}/.exec(rest);
    if (braced) {
      const [whole, name, operator, word] = braced;
      const value = vars.get(name!);
      if (operator === undefined) out += value ?? "";
      else if (operator === ":-") out += value ? value : word!;
      else out += value ? word! : "";
      index += whole.length;
      continue;
    }
    throw new UnresolvableDockerfile(line, `cannot resolve the variable expression "$${rest.slice(0, 24)}"`);
  }
  return out;
}

/** Splits ARG's `name=value name2="value 2"` arguments (double/single quotes, escapes). */
function parseArgDefinitions(args: string, escape: string, line: number): Array<{ name: string; value: string | undefined }> {
  const words: string[] = [];
  let current = "";
  let quote: string | null = null;
  let inWord = false;
  for (let index = 0; index < args.length; index++) {
    const char = args[index]!;
    if (quote) {
      if (char === quote) quote = null;
      else if (char === escape && quote === '"' && index + 1 < args.length) current += args[++index];
      else current += char;
      continue;
    }
    if (char === '"' || char === "'") {
      quote = char;
      inWord = true;
    } else if (char === escape && index + 1 < args.length) {
      current += args[++index];
      inWord = true;
    } else if (/\s/.test(char)) {
      if (inWord) words.push(current);
      current = "";
      inWord = false;
    } else {
      current += char;
      inWord = true;
    }
  }
  if (quote) throw new UnresolvableDockerfile(line, "unterminated quote in ARG");
  if (inWord) words.push(current);
  return words.map((word) => {
    const equals = word.indexOf("=");
    const name = equals === -1 ? word : word.slice(0, equals);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UnresolvableDockerfile(line, `invalid ARG name "${name}"`);
    return { name, value: equals === -1 ? undefined : word.slice(equals + 1) };
  });
}

const REFERENCE = /^(?:([a-zA-Z0-9.-]+(?::[0-9]+)?)\/)?([a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@([a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-fA-F0-9]{32,}))?$/;

/** Normalises an image reference the way Docker does: "python:3.11" → docker.io/library/python. */
export function normalizeImageReference(reference: string): { registry: string; repository: string } | null {
  if (reference.length > 512) return null;
  const slash = reference.indexOf("/");
  const first = slash === -1 ? "" : reference.slice(0, slash);
  // The first component is a registry only when it looks like a host (Docker's rule).
  const hasRegistry = slash !== -1 && (first.includes(".") || first.includes(":") || first === "localhost");
  const match = REFERENCE.exec(hasRegistry ? reference : `docker.io/${reference}`);
  if (!match) return null;
  let registry = match[1]!.toLowerCase();
  let path = match[2]!;
  if (registry === "index.docker.io" || registry === "registry-1.docker.io") registry = "docker.io";
  if (registry === "docker.io" && !path.includes("/")) path = `library/${path}`;
  return { registry, repository: `${registry}/${path}` };
}

function parseFrom(args: string, line: number): { image: string; stage: string | undefined } {
  const words = args.trim().split(/\s+/).filter(Boolean);
  while (words[0]?.startsWith("--")) {
    const flag = words.shift()!;
    if (!/^--platform=\S*$/.test(flag)) throw new UnresolvableDockerfile(line, `unsupported FROM flag "${flag.slice(0, 40)}"`);
  }
  if (words.length === 1) return { image: words[0]!, stage: undefined };
  if (words.length === 3 && words[1]!.toUpperCase() === "AS") return { image: words[0]!, stage: words[2]!.toLowerCase() };
  throw new UnresolvableDockerfile(line, `FROM must be "FROM [--platform=…] image [AS name]"`);
}

/**
 * Every external image a Dockerfile names. Throws UnresolvableDockerfile when it cannot tell
 * with certainty (unknown syntax, an unresolvable variable, an empty or invalid reference).
 */
export function extractBaseImages(text: string): BaseImage[] {
  const { instructions, directives } = readInstructions(text);
  const escape = directives.get("escape")?.value ?? "\\";
  const images: BaseImage[] = [];
  const add = (reference: string, line: number, via: BaseImage["via"]) => {
    const normalized = normalizeImageReference(reference);
    if (!normalized) throw new UnresolvableDockerfile(line, `"${reference.slice(0, 200)}" is not a valid image reference`);
    images.push({ reference, ...normalized, line, via });
  };

  const syntax = directives.get("syntax");
  if (syntax) add(syntax.value, syntax.line, "syntax");

  const globalArgs = new Map<string, string>();
  const stages = new Set<string>();
  let seenFrom = false;
  for (const instruction of instructions) {
    if (instruction.keyword === "ARG" && !seenFrom) {
      for (const { name, value } of parseArgDefinitions(instruction.args, escape, instruction.line)) {
        // Defaults may refer to earlier global ARGs. Build args are never passed by the worker.
        if (value !== undefined) globalArgs.set(name, substitute(value, globalArgs, escape, instruction.line));
        // re-declared without a default: unset again (moby's meta args)
        else globalArgs.delete(name);
      }
    } else if (instruction.keyword === "FROM") {
      seenFrom = true;
      const { image: written, stage } = parseFrom(instruction.args, instruction.line);
      const image = substitute(written, globalArgs, escape, instruction.line);
      if (image === "") throw new UnresolvableDockerfile(instruction.line, `FROM ${written} resolves to an empty image name`);
      if (/\s/.test(image)) throw new UnresolvableDockerfile(instruction.line, `FROM ${written} resolves to "${image}", which is not one image`);
      if (stage !== undefined && !/^[a-z][a-z0-9._-]*$/.test(stage)) throw new UnresolvableDockerfile(instruction.line, `invalid stage name "${stage}"`);
      if (image.toLowerCase() === "scratch") {
        // no image
      } else if (stages.has(image.toLowerCase())) {
        // an earlier stage of this Dockerfile
      } else {
        add(image, instruction.line, "FROM");
      }
      if (stage !== undefined) stages.add(stage);
    } else if (instruction.keyword === "ONBUILD") {
      // Triggers run in a later build that uses this image as a base; refuse what could name an image there.
      if (/--from|--mount|^\s*FROM\b/i.test(instruction.args)) {
        throw new UnresolvableDockerfile(instruction.line, "ONBUILD triggers that name images are not supported");
      }
    } else if (instruction.keyword === "COPY" || instruction.keyword === "ADD" || instruction.keyword === "RUN") {
      for (const flag of instruction.args.matchAll(/(?:^|\s)--(from|mount)=(\S*)/g)) {
        if (flag[1] === "mount") {
          // BuildKit's RUN --mount=from=<image> could pull an image: refuse any mount that names a source.
          if (/(^|,)from=/.test(flag[2]!)) throw new UnresolvableDockerfile(instruction.line, "RUN --mount=from=… is not supported");
          continue;
        }
        const from = substitute(flag[2]!, new Map(), escape, instruction.line);
        if (from === "") throw new UnresolvableDockerfile(instruction.line, "--from= is empty");
        if (/^\d+$/.test(from) || stages.has(from.toLowerCase())) continue;
        add(from, instruction.line, "COPY --from");
      }
    }
  }
  if (!seenFrom) throw new UnresolvableDockerfile(0, "the Dockerfile has no FROM instruction");
  return images;
}

/** Host[:port] entries, lowercased; "index.docker.io" and "registry-1.docker.io" mean docker.io. */
export function normalizeRegistryHost(host: string): string {
  const lower = host.trim().toLowerCase().replace(/\/+$/, "");
  return lower === "index.docker.io" || lower === "registry-1.docker.io" ? "docker.io" : lower;
}

/** The images whose registry is not in `allowed` (compared as normalised host[:port]). */
export function disallowedBaseImages(images: readonly BaseImage[], allowed: readonly string[]): BaseImage[] {
  const allowedSet = new Set(allowed.map(normalizeRegistryHost));
  return images.filter((image) => !allowedSet.has(image.registry));
}
