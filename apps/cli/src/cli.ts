import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { API_TOKEN_ROLES, createApiToken, parseTokenExpiry, decodeConfigText, isBuilderError, parseBuildConfig, type ApiTokenRole, type FieldIssue } from "@m1l0/config";
import { M1l0ApiError, M1l0Client, isBuildStatus, isTerminal, type BuildRecord } from "@m1l0/sdk";
import { loadCliEnv, type CliEnv } from "./env.js";
import { describeRecord, formatEventLine, formatTable } from "./format.js";
import { PlainProgressView, TtyProgressView, type Output, type ProgressView } from "./progress.js";

/** Exit codes: 0 ok, 1 the build or the request failed, 2 bad usage or an invalid config. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

export const USAGE = `m1l0 — submit and follow M1L0 image builds

Usage:
  m1l0 build <config.yaml|json> [--follow | --no-follow] [--json]
  m1l0 status <id> [--json]
  m1l0 logs <id> [--follow] [--json]
  m1l0 list [--status STATUS] [--limit N] [--cursor C | --all] [--json]
  m1l0 cancel <id> [--json]
  m1l0 token create --name NAME [--role user|admin] [--expires 30d|DATE] [--out FILE] [--json]

Options:
  --api URL      API address (env M1L0_API_URL, default http://127.0.0.1:8080)
  --token TOKEN  bearer token (env M1L0_TOKEN, or a file named by M1L0_TOKEN_FILE)
  --follow       build: wait for the build, showing its progress (default on a terminal)
                 logs: keep streaming until the build ends
  --no-follow    build: print the id and return at once
  --json         machine-readable output on stdout (build --follow: the final record;
                 logs: {id, lines}, with --follow one event per line; list: an array)
  --limit N      list: builds per page, newest first (1-500, default 50)
  --cursor C     list: the page after the one that printed "next page: --cursor C"
  --all          list: every page, one after another
  -h, --help     show this help

token create makes a new API token (offline: nothing is sent anywhere). It prints the token
(shown once; give it to the client) and the line "name:role:sha256" for the operator's
API_TOKENS_FILE; with --out FILE the token goes to FILE (mode 600) and only the line is printed.
--expires (a duration: 30d, 12h, 90m, 2w; or a UTC date: 2027-01-31[T12:00:00Z]) puts an expiry
in the line: from then on the API answers that token 401 "expired". The API reloads
API_TOKENS_FILE when it changes (or on SIGHUP): adding or deleting a line needs no restart.

build prints progress on stderr and ends with "image: <ref>" and "digest: sha256:…" on
stdout. Exit codes: 0 success, 1 failed build or request, 2 invalid config or usage.`;

export interface CliIo {
  stdout: Output;
  stderr: Output;
  env?: CliEnv;
  /** aborts a follow (Ctrl-C): the build keeps running on the server */
  signal?: AbortSignal;
}

class UsageError extends Error {}

function printIssues(out: Output, issues: FieldIssue[]): void {
  for (const issue of issues) out.write(`  ${issue.field}: ${issue.message}\n`);
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      api: { type: "string" },
      token: { type: "string" },
      json: { type: "boolean", default: false },
      follow: { type: "boolean", default: false },
      "no-follow": { type: "boolean", default: false },
      status: { type: "string" },
      limit: { type: "string" },
      cursor: { type: "string" },
      all: { type: "boolean", default: false },
      name: { type: "string" },
      role: { type: "string" },
      out: { type: "string" },
      expires: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
}

type Flags = ReturnType<typeof parse>["values"];

/** Runs one CLI invocation and returns its exit code (main.ts sets process.exitCode). */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const env = io.env ?? loadCliEnv();
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(argv);
  } catch (error) {
    io.stderr.write(`m1l0: ${(error as Error).message}\n\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  const { values: flags, positionals } = parsed;
  const [command, ...rest] = positionals;
  if (flags.help) {
    io.stdout.write(`${USAGE}\n`);
    return EXIT_OK;
  }
  if (command === "token") {
    try {
      return await tokenCommand(rest, flags, io);
    } catch (error) {
      return reportError(error, io);
    }
  }
  let token = flags.token ?? env.token;
  if (!token && env.tokenFile) {
    try {
      token = (await readFile(env.tokenFile, "utf8")).trim() || undefined;
    } catch (error) {
      io.stderr.write(`m1l0: cannot read M1L0_TOKEN_FILE ${env.tokenFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}\n`);
      return EXIT_USAGE;
    }
  }
  const client = new M1l0Client({ baseUrl: flags.api ?? env.apiUrl, ...(token ? { token } : {}) });
  try {
    switch (command) {
      case "build":
        return await buildCommand(client, one(rest, "build <config.yaml|json>"), flags, io, env);
      case "status":
        return await statusCommand(client, one(rest, "status <id>"), flags, io);
      case "logs":
        return await logsCommand(client, one(rest, "logs <id>"), flags, io);
      case "cancel":
        return await cancelCommand(client, one(rest, "cancel <id>"), flags, io);
      case "list":
        if (rest.length > 0) throw new UsageError(`list takes no arguments (got ${rest.join(" ")})`);
        return await listCommand(client, flags, io);
      default:
        throw new UsageError(command ? `unknown command "${command}"` : "a command is required");
    }
  } catch (error) {
    return reportError(error, io);
  }
}

function one(args: string[], usage: string): string {
  const [value, ...extra] = args;
  if (!value || extra.length > 0) throw new UsageError(`usage: m1l0 ${usage}`);
  return value;
}

function reportError(error: unknown, io: CliIo): number {
  if (isBuilderError(error) && error.code === "VALIDATION_FAILED") {
    io.stderr.write(`m1l0: ${error.message}\n`);
    return EXIT_USAGE;
  }
  if (error instanceof UsageError) {
    io.stderr.write(`m1l0: ${error.message}\n(m1l0 --help for usage)\n`);
    return EXIT_USAGE;
  }
  if (error instanceof M1l0ApiError) {
    // the SDK's 401 hint speaks to programmers; the CLI names its own settings
    const message = error.isUnauthenticated ? `${error.message.replace(/ \(the API needs a valid token:.*\)$/, "")} (set M1L0_TOKEN, M1L0_TOKEN_FILE or --token)` : error.message;
    io.stderr.write(`m1l0: ${error.code}: ${message}\n`);
    printIssues(io.stderr, error.issues);
    // a config the API rejects is the caller's input problem, like a local validation error
    return error.status === 400 ? EXIT_USAGE : EXIT_FAILED;
  }
  if (io.signal?.aborted) {
    return EXIT_INTERRUPTED;
  }
  io.stderr.write(`m1l0: ${(error as Error).message ?? String(error)}\n`);
  return EXIT_FAILED;
}

async function buildCommand(client: M1l0Client, file: string, flags: Flags, io: CliIo, env: CliEnv): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    io.stderr.write(`m1l0: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}\n`);
    return EXIT_USAGE;
  }
  let config: unknown;
  try {
    config = decodeConfigText(text);
    // the same checks the API runs, so a typo fails here, before anything is sent
    parseBuildConfig(config);
  } catch (error) {
    if (!isBuilderError(error)) throw error;
    const fieldIssues = (error.issues ?? []).filter((issue) => issue.field !== "(body)");
    if (fieldIssues.length === 0) {
      // not a mapping, or not YAML at all: the parser's own message says where
      io.stderr.write(`m1l0: invalid config ${file}: ${error.message}\n`);
    } else {
      io.stderr.write(`m1l0: invalid config ${file}:\n`);
      printIssues(io.stderr, fieldIssues);
    }
    return EXIT_USAGE;
  }
  const submitted = await client.submit(config as Parameters<M1l0Client["submit"]>[0], io.signal ? { signal: io.signal } : {});
  const follow = flags.follow || (!flags["no-follow"] && io.stdout.isTTY === true);
  if (!follow) {
    io.stdout.write(flags.json ? `${JSON.stringify(submitted)}\n` : `id: ${submitted.id}\nstatus: ${submitted.status}\n`);
    return EXIT_OK;
  }
  io.stderr.write(`build ${submitted.id} submitted (${submitted.status})\n`);
  const view: ProgressView =
    io.stderr.isTTY && !env.dumbTerminal ? new TtyProgressView(io.stderr, submitted.id) : new PlainProgressView(io.stderr);
  let record: BuildRecord;
  try {
    for await (const { event } of client.watch(submitted.id, io.signal ? { signal: io.signal } : {})) view.onEvent(event);
    record = await client.get(submitted.id);
    if (!isTerminal(record.status)) record = await client.wait(submitted.id, io.signal ? { signal: io.signal } : {});
  } catch (error) {
    view.stop();
    if (io.signal?.aborted) {
      io.stderr.write(`stopped following; build ${submitted.id} continues (m1l0 status ${submitted.id})\n`);
      return EXIT_INTERRUPTED;
    }
    throw error;
  }
  view.finish(record);
  const succeeded = record.status === "succeeded" || record.status === "cached";
  if (flags.json) {
    io.stdout.write(`${JSON.stringify(record)}\n`);
  } else if (succeeded && record.image) {
    io.stdout.write(`id: ${record.id}\nimage: ${record.image.reference}\n${record.image.digest ? `digest: ${record.image.digest}\n` : ""}`);
  }
  return succeeded ? EXIT_OK : EXIT_FAILED;
}

async function statusCommand(client: M1l0Client, id: string, flags: Flags, io: CliIo): Promise<number> {
  const record = await client.get(id);
  io.stdout.write(flags.json ? `${JSON.stringify(record)}\n` : `${describeRecord(record)}\n`);
  return EXIT_OK;
}

async function cancelCommand(client: M1l0Client, id: string, flags: Flags, io: CliIo): Promise<number> {
  const result = await client.cancel(id);
  io.stdout.write(flags.json ? `${JSON.stringify(result)}\n` : `${result.id}: cancel ${result.cancel} (status ${result.status})\n`);
  return EXIT_OK;
}

async function logsCommand(client: M1l0Client, id: string, flags: Flags, io: CliIo): Promise<number> {
  if (!flags.follow) {
    const text = await client.logs(id);
    io.stdout.write(flags.json ? `${JSON.stringify({ id, lines: text.split("\n").filter(Boolean) })}\n` : text);
    return EXIT_OK;
  }
  try {
    for await (const item of client.watch(id, io.signal ? { signal: io.signal } : {})) {
      io.stdout.write(flags.json ? `${JSON.stringify(item)}\n` : `${formatEventLine(item.event)}\n`);
    }
  } catch (error) {
    if (io.signal?.aborted) return EXIT_INTERRUPTED;
    throw error;
  }
  return EXIT_OK;
}

async function listCommand(client: M1l0Client, flags: Flags, io: CliIo): Promise<number> {
  if (flags.status !== undefined && !isBuildStatus(flags.status)) throw new UsageError(`--status must be one of queued, fetching, building, pushing, succeeded, failed, cancelled, cached`);
  const limit = flags.limit === undefined ? undefined : Number(flags.limit);
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 1 || limit > 500)) throw new UsageError("--limit must be an integer from 1 to 500");
  if (flags.all && flags.cursor !== undefined) throw new UsageError("--all starts from the newest build: leave out --cursor");
  const options = { ...(flags.status && isBuildStatus(flags.status) ? { status: flags.status } : {}), ...(limit ? { limit } : {}) };
  const builds: BuildRecord[] = [];
  let cursor = flags.cursor;
  do {
    const page = await client.listPage({ ...options, ...(cursor !== undefined ? { cursor } : {}) });
    builds.push(...page.builds);
    cursor = page.nextCursor;
  } while (flags.all && cursor);
  if (flags.json) io.stdout.write(`${JSON.stringify(builds)}\n`);
  else io.stdout.write(builds.length ? `${formatTable(builds)}\n` : "no builds\n");
  // on stderr, so stdout stays the table (or the JSON array) alone
  if (cursor) io.stderr.write(`next page: --cursor ${cursor}\n`);
  return EXIT_OK;
}

/** `token create`: a new token and its hash line, made locally (the API only ever sees hashes in its config). */
async function tokenCommand(args: string[], flags: Flags, io: CliIo): Promise<number> {
  if (args[0] !== "create" || args.length !== 1) throw new UsageError("usage: m1l0 token create --name NAME [--role user|admin] [--expires 30d|DATE] [--out FILE] [--json]");
  if (!flags.name) throw new UsageError("token create needs --name (recorded on the builds this token submits)");
  const role = flags.role ?? "user";
  if (!(API_TOKEN_ROLES as readonly string[]).includes(role)) throw new UsageError(`--role must be one of ${API_TOKEN_ROLES.join(", ")}`);
  let expiresAt: string | undefined;
  try {
    expiresAt = flags.expires === undefined ? undefined : parseTokenExpiry(flags.expires);
  } catch (error) {
    throw new UsageError(`--expires: ${(error as Error).message.replace(/^token expiry: /, "")}`);
  }
  const { token, line, entry } = createApiToken(flags.name, role as ApiTokenRole, expiresAt ? { expiresAt } : {});
  const expiry = entry.expiresAt ? { expiresAt: entry.expiresAt } : {};
  if (flags.out) {
    // exclusive create: never overwrite (or widen the mode of) an existing file
    await writeFile(flags.out, `${token}\n`, { mode: 0o600, flag: "wx" });
    io.stdout.write(flags.json ? `${JSON.stringify({ name: entry.name, role: entry.role, ...expiry, line, tokenFile: flags.out })}\n` : `${line}\n`);
    return EXIT_OK;
  }
  io.stdout.write(flags.json ? `${JSON.stringify({ name: entry.name, role: entry.role, ...expiry, token, line })}\n` : `token: ${token}\nline:  ${line}\n`);
  io.stderr.write("add the line to the API's API_TOKENS_FILE (read again within seconds, no restart); the token is shown only now\n");
  return EXIT_OK;
}
