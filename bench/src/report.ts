import os from "node:os";

/** One benchmark's section in BENCHMARKS.md: a table plus notes (method, noise, caveats). */
export interface Table {
  title: string;
  columns: string[];
  rows: string[][];
  notes: string[];
}

const escapeCell = (text: string) => text.replace(/\|/g, "\\|").replace(/\n/g, " ");

export function renderTable(table: Table): string {
  const lines = [`## ${table.title}`, ""];
  lines.push(`| ${table.columns.map(escapeCell).join(" | ")} |`);
  lines.push(`|${table.columns.map(() => "---").join("|")}|`);
  for (const row of table.rows) lines.push(`| ${row.map(escapeCell).join(" | ")} |`);
  if (table.notes.length > 0) {
    lines.push("");
    for (const note of table.notes) lines.push(`- ${note}`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * One line per target across the tables (rows whose last column says yes/no or that were not
 * measured), so the report opens with which targets are met.
 */
export function renderTargets(tables: Table[]): string {
  const lines = ["## Targets", "", "| benchmark | metric | ours | target | met? |", "|---|---|---|---|---|"];
  for (const table of tables) {
    const metIndex = table.columns.indexOf("met?");
    const targetIndex = table.columns.indexOf("target");
    const name = escapeCell(table.title.replace(/ — .*$/, ""));
    if (table.columns.length === 1) {
      lines.push(`| ${name} | – | ${escapeCell(table.rows[0]?.[0] ?? "")} | – | – |`);
      continue;
    }
    for (const row of table.rows) {
      const met = row[metIndex] ?? "";
      const target = row[targetIndex] ?? "";
      if (metIndex < 0 || targetIndex < 0 || !target || target.startsWith("(")) continue;
      if (!["yes", "no", "–"].includes(met)) continue;
      lines.push(`| ${name} | ${escapeCell(row[0] ?? "")} | ${escapeCell(row[1] ?? "")} | ${escapeCell(target)} | ${met === "–" ? "not measured" : met} |`);
    }
  }
  return `${lines.join("\n")}\n`;
}

export interface Machine {
  cpus: string;
  cores: number;
  memory: string;
  os: string;
  node: string;
  loadAverage: string;
}

export function describeMachine(): Machine {
  const cpus = os.cpus();
  return {
    cpus: cpus[0]?.model ?? "unknown",
    cores: cpus.length,
    memory: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    loadAverage: os.loadavg().map((value) => value.toFixed(2)).join(" / "),
  };
}

export interface ReportInput {
  command: string;
  startedAt: Date;
  finishedAt: Date;
  machineBefore: Machine;
  loadAfter: string;
  quick: boolean;
  /** how the services were laid out (daemons, workers), one line each */
  setup?: string[];
  sections: string[];
}

export function renderReport(input: ReportInput): string {
  const machine = input.machineBefore;
  const minutes = ((input.finishedAt.getTime() - input.startedAt.getTime()) / 60_000).toFixed(1);
  return [
    "# Benchmarks",
    "",
    "Written by the benchmark runner (`bench/src/main.ts`); do not edit by hand — rerun it.",
    "",
    `- command: \`${input.command}\`${input.quick ? " (quick smoke run: few repetitions, small tree — figures are indicative only)" : ""}`,
    `- date: ${input.startedAt.toISOString()} (took ${minutes} min)`,
    `- machine: ${machine.cores} cores (${machine.cpus}), ${machine.memory} RAM, ${machine.os}, Node ${machine.node}`,
    `- load average (1/5/15 min) before: ${machine.loadAverage}; after: ${input.loadAfter}`,
    ...(input.setup ?? []).map((line) => `- ${line}`),
    "- Figures are medians with (min–max, n) over repetitions; compared variants alternate within one run.",
    "  Ratios are ours ÷ baseline (for times lower is better, for throughput higher is better).",
    "  Targets come from issues 8 and 17 (this round's) and are reported, never asserted; a 'no' comes with the measured floor or profile that explains it.",
    "",
    ...input.sections,
  ].join("\n");
}
