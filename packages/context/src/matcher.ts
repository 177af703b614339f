/**
 * Docker's .dockerignore pattern language (moby/patternmatcher, as the docker CLI applies it to
 * the build context), matched by NFA simulation instead of a backtracking regex: every pattern is
 * compiled to a small automaton and a path is scanned once, left to right, keeping the set of live
 * states. Time is O(|path| × |pattern|) for any pattern, so `*a*a*a*a*b` costs the same as `*.md`.
 *
 * Semantics (moby translates each pattern to a regex, `^…$`):
 * - `*` matches any run of characters except `/`; `?` one character except `/`;
 * - `**` matches any number of whole path segments: `**` followed by a slash (or by more pattern)
 *   is the regex `(.*` + `/)?`, a trailing `**` is `.*`;
 * - `[abc]`, `[a-z]`, `[^a-z]` are character classes (`^` negates; `!` is an ordinary member, as in
 *   Go's regexp); `\x` is a literal `x`; every other character is itself;
 * - a pattern that matches a directory also matches everything below it (the path or any of its
 *   ancestors matching counts, as moby's MatchesOrParentMatches);
 * - rules are evaluated in order and the last matching one wins; `!` rules re-include.
 *
 * Deliberate differences from the regex translation: characters that are regex syntax but not glob
 * syntax (`+ ( ) | { } ^` outside a class) are literal here (Docker would interpret `a+` as a regex),
 * and character classes never match `/` (as Go's filepath.Match, which Docker documents).
 */

const enum Kind {
  /** one specific character */
  Literal,
  /** `?`: one character except `/` */
  AnyButSlash,
  /** `*`: loops on any character except `/`, may be skipped */
  Star,
  /** `**` followed by more pattern, the regex `(.*` + `/)?`: skippable; once entered, must end on a `/` */
  SegmentsStart,
  /** inner state of SegmentsStart: loops on anything, leaves on `/` */
  SegmentsInner,
  /** trailing `**`: `.*` */
  Rest,
  /** `[...]` */
  Class,
}

interface Node {
  kind: Kind;
  /** Literal: the UTF-16 code unit */
  char?: number;
  /** Class: inclusive ranges of code units */
  ranges?: number[];
  negated?: boolean;
}

const SLASH = 0x2f;

export class InvalidPatternError extends Error {}

/** A compiled pattern; `nodes[i]` is NFA state i and state `nodes.length` accepts. */
export class CompiledPattern {
  readonly source: string;
  readonly #nodes: Node[];
  /** the pattern when it has no wildcard, class or escape: matched by string comparison */
  readonly #literal: string | null;
  /** scratch state sets, reused across calls (one matcher is never used re-entrantly) */
  #current: Uint8Array;
  #next: Uint8Array;

  constructor(source: string) {
    this.source = source;
    this.#nodes = compile(source);
    this.#literal = /[*?[\\]/.test(source) ? null : source;
    this.#current = new Uint8Array(this.#nodes.length + 1);
    this.#next = new Uint8Array(this.#nodes.length + 1);
  }

  /** Number of NFA states (the |pattern| of the complexity bound). */
  get size(): number {
    return this.#nodes.length + 1;
  }

  /** true when the pattern matches the whole of `text`. */
  matches(text: string, counter?: StepCounter): boolean {
    return this.#run(text, false, counter);
  }

  /** true when the pattern matches `path` or one of its ancestor directories ("a" for "a/b/c"). */
  matchesPathOrAncestor(path: string, counter?: StepCounter): boolean {
    return this.#run(path, true, counter);
  }

  #run(text: string, acceptAtSlash: boolean, counter: StepCounter | undefined): boolean {
    const literal = this.#literal;
    if (literal !== null) {
      if (counter) counter.steps += Math.min(text.length, literal.length) + 1;
      // the same answer the automaton gives for a pattern of plain characters
      return text === literal || (acceptAtSlash && literal.length > 0 && text.startsWith(literal) && text.charCodeAt(literal.length) === SLASH);
    }
    const nodes = this.#nodes;
    const accept = nodes.length;
    let current = this.#current;
    let next = this.#next;
    current.fill(0);
    this.#close(current, 0);
    for (let index = 0; index < text.length; index++) {
      const char = text.charCodeAt(index);
      // Before consuming a "/", the prefix read so far is an ancestor directory of the path.
      if (acceptAtSlash && char === SLASH && index > 0 && current[accept] === 1) return true;
      next.fill(0);
      let alive = false;
      for (let state = 0; state < accept; state++) {
        if (counter) counter.steps++;
        if (current[state] === 0) continue;
        const node = nodes[state]!;
        switch (node.kind) {
          case Kind.Literal:
            if (char === node.char) alive = this.#close(next, state + 1) || alive;
            break;
          case Kind.AnyButSlash:
            if (char !== SLASH) alive = this.#close(next, state + 1) || alive;
            break;
          case Kind.Star:
            if (char !== SLASH) alive = this.#close(next, state) || alive;
            break;
          case Kind.SegmentsStart:
          case Kind.SegmentsInner:
            // consume into the inner state; a "/" may also end the segments
            alive = this.#close(next, node.kind === Kind.SegmentsStart ? state + 1 : state) || alive;
            if (char === SLASH) alive = this.#close(next, node.kind === Kind.SegmentsStart ? state + 2 : state + 1) || alive;
            break;
          case Kind.Rest:
            alive = this.#close(next, state) || alive;
            break;
          case Kind.Class:
            if (char !== SLASH && inClass(node, char)) alive = this.#close(next, state + 1) || alive;
            break;
        }
      }
      if (!alive) return false;
      [current, next] = [next, current];
    }
    this.#current = current;
    this.#next = next;
    return current[accept] === 1;
  }

  /** Adds `state` and everything reachable from it without consuming input; returns true. */
  #close(set: Uint8Array, start: number): boolean {
    let state = start;
    // Epsilon moves only go forward, one skippable node at a time, so the closure is a straight run.
    while (set[state] !== 1) {
      set[state] = 1;
      const node = this.#nodes[state];
      if (node === undefined) break;
      if (node.kind === Kind.Star || node.kind === Kind.Rest) state += 1;
      else if (node.kind === Kind.SegmentsStart) state += 2;
      else break;
    }
    return true;
  }
}

export interface StepCounter {
  steps: number;
}

function inClass(node: Node, char: number): boolean {
  const ranges = node.ranges!;
  let found = false;
  for (let index = 0; index < ranges.length; index += 2) {
    if (char >= ranges[index]! && char <= ranges[index + 1]!) {
      found = true;
      break;
    }
  }
  return found !== node.negated;
}

function compile(pattern: string): Node[] {
  const nodes: Node[] = [];
  for (let index = 0; index < pattern.length; index++) {
    const char = pattern[index]!;
    if (char === "*") {
      if (pattern[index + 1] === "*") {
        index++;
        // "**/" is "**": the slash is eaten
        if (pattern[index + 1] === "/") index++;
        if (index + 1 >= pattern.length) nodes.push({ kind: Kind.Rest });
        else nodes.push({ kind: Kind.SegmentsStart }, { kind: Kind.SegmentsInner });
      } else {
        // "**" handled above; consecutive single stars collapse into one loop
        if (nodes.at(-1)?.kind !== Kind.Star) nodes.push({ kind: Kind.Star });
      }
    } else if (char === "?") {
      nodes.push({ kind: Kind.AnyButSlash });
    } else if (char === "\\") {
      // a trailing backslash stays a literal backslash
      const next = pattern[index + 1];
      if (next === undefined) nodes.push({ kind: Kind.Literal, char: 0x5c });
      else {
        nodes.push({ kind: Kind.Literal, char: next.charCodeAt(0) });
        index++;
      }
    } else if (char === "[") {
      index = compileClass(pattern, index, nodes);
    } else {
      nodes.push({ kind: Kind.Literal, char: char.charCodeAt(0) });
    }
  }
  return nodes;
}

/** Parses `[...]` starting at `start` (the "["); returns the index of its "]". */
function compileClass(pattern: string, start: number, nodes: Node[]): number {
  let index = start + 1;
  let negated = false;
  if (pattern[index] === "^") {
    negated = true;
    index++;
  }
  const ranges: number[] = [];
  let first = true;
  for (;;) {
    let char = pattern[index];
    if (char === undefined) throw new InvalidPatternError(`unterminated character class in "${pattern}"`);
    if (char === "]" && !first) break;
    first = false;
    if (char === "\\") {
      index++;
      char = pattern[index];
      if (char === undefined) throw new InvalidPatternError(`unterminated character class in "${pattern}"`);
    }
    const low = char.charCodeAt(0);
    let high = low;
    if (pattern[index + 1] === "-" && pattern[index + 2] !== undefined && pattern[index + 2] !== "]") {
      index += 2;
      let end = pattern[index]!;
      if (end === "\\") {
        index++;
        end = pattern[index] ?? "";
        if (end === "") throw new InvalidPatternError(`unterminated character class in "${pattern}"`);
      }
      high = end.charCodeAt(0);
      if (high < low) throw new InvalidPatternError(`invalid character range in "${pattern}"`);
    }
    ranges.push(low, high);
    index++;
  }
  nodes.push({ kind: Kind.Class, ranges, negated });
  return index;
}

export interface Rule {
  negative: boolean;
  pattern: CompiledPattern;
}

/** Last matching rule wins; a rule matching an ancestor directory matches the path. */
export function isPathIgnored(rules: readonly Rule[], path: string, counter?: StepCounter): boolean {
  let ignored = false;
  for (const rule of rules) {
    // Only a rule that could change the answer needs evaluating (moby skips the same way).
    if (rule.negative !== ignored) continue;
    if (rule.pattern.matchesPathOrAncestor(path, counter)) ignored = !rule.negative;
  }
  return ignored;
}
