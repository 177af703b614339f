/**
 * Turns the daemon's output stream back into whole lines. Docker's JSON messages carry text
 * in chunks that are not line-aligned (a line may be cut anywhere, even mid-escape), so text
 * is buffered until its newline. A carriage return without a newline redraws the line (pip's
 * and curl's progress bars): only the state after the last `\r` is kept, so a bar becomes one
 * line, its last state, instead of thousands. ANSI colour escapes are removed.
 */
export class LineJoiner {
  private pending = "";

  /** @param maxPendingChars a "line" longer than this without a newline is emitted in pieces (bounded memory); the store truncates each */
  constructor(
    private readonly emit: (line: string) => void,
    private readonly maxPendingChars = 1024 * 1024,
  ) {}

  write(text: string): void {
    const parts = (this.pending + text).split("\n");
    this.pending = parts.pop() ?? "";
    for (const part of parts) this.line(part);
    if (this.pending.length > this.maxPendingChars) {
      // keep the newest state of a redrawn line; emit an endless one in bounded pieces
      const redrawn = collapseCarriageReturns(this.pending);
      if (redrawn.length > this.maxPendingChars) {
        this.line(redrawn);
        this.pending = "";
      } else this.pending = redrawn;
    }
  }

  /** Emits what is left (a last line without a newline). */
  end(): void {
    if (this.pending) this.line(this.pending);
    this.pending = "";
  }

  private line(raw: string): void {
    const line = stripAnsi(collapseCarriageReturns(raw));
    if (line.trim()) this.emit(line);
  }
}

/** `a\rb\rc` → `c`; a trailing `\r` (of `\r\n`, or a redraw not yet drawn) does not blank the line. */
export function collapseCarriageReturns(text: string): string {
  const trimmed = text.replace(/\r+$/, "");
  const last = trimmed.lastIndexOf("\r");
  return last < 0 ? trimmed : trimmed.slice(last + 1);
}

export function stripAnsi(text: string): string {
  // the classic builder colours a step's stderr with ANSI escapes
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
}
