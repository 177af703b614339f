import { statSync, watch, type FSWatcher } from "node:fs";
import path from "node:path";
import { loadTokenEntries, type ReadTokenFile, type TokenSources } from "./config.js";
import type { Authenticator } from "./principal.js";

export interface TokenReloadLogger {
  info(object: object, message: string): void;
  error(object: object, message: string): void;
}

export interface TokenReloadOptions {
  /** stat polling interval: the fallback where fs.watch misses changes (network file systems, some editors' renames) */
  pollIntervalMs?: number;
  readFile?: ReadTokenFile;
  /** reload on this signal as well [SIGHUP]; undefined in tests that run several watchers in one process */
  signal?: NodeJS.Signals | undefined;
  /** use fs.watch [true]; false leaves the poll alone (tests of the fallback) */
  fsWatch?: boolean;
}

export interface TokenReloader {
  /** reads the file now and swaps the tokens in; a broken file keeps the tokens in force (and is logged) */
  reload(why: string): boolean;
  close(): void;
}

/**
 * Keeps the Authenticator in step with API_TOKENS_FILE without a restart: fs.watch on the
 * file's directory (editors and `mv` replace the file, which a watch on the file itself would
 * lose), a stat poll as the fallback, and SIGHUP. A revoked token is refused from the next
 * request after the reload; a file that no longer parses, or lists no token, is refused and
 * the previous tokens stay in force, so a typo cannot lock everyone out or open the API.
 */
export function watchTokensFile(auth: Authenticator, env: TokenSources, logger: TokenReloadLogger, options: TokenReloadOptions = {}): TokenReloader {
  const file = env.API_TOKENS_FILE;
  if (!file || auth.disabled) return { reload: () => false, close: () => undefined };
  const pollIntervalMs = options.pollIntervalMs ?? 1000;
  let last = "";
  const reload = (why: string): boolean => {
    try {
      const entries = loadTokenEntries(env, options.readFile);
      const fingerprint = JSON.stringify(entries);
      if (fingerprint === last) return true;
      auth.replace(entries);
      last = fingerprint;
      logger.info({ tokens: entries.length, why }, "API tokens reloaded");
      return true;
    } catch (error) {
      logger.error({ err: { message: (error as Error).message }, why }, "API_TOKENS_FILE not reloaded: keeping the tokens in force");
      return false;
    }
  };
  last = JSON.stringify(safeEntries(env, options.readFile));
  const watcher = options.fsWatch === false ? undefined : watchFolderOf(file, () => reload("file changed"));
  const poll = pollFile(file, pollIntervalMs, () => reload("file changed (poll)"));
  const signal = "signal" in options ? options.signal : "SIGHUP";
  const onSignal = () => reload(signal ?? "signal");
  if (signal) process.on(signal, onSignal);
  return {
    reload,
    close() {
      watcher?.close();
      clearInterval(poll);
      if (signal) process.off(signal, onSignal);
    },
  };
}

/**
 * Our own stat poll (fs.watchFile takes its first stat asynchronously, so a change made right
 * after it starts can become its baseline and never be seen): the first tick always reloads,
 * later ticks when size, mtime or inode changed.
 */
function pollFile(file: string, intervalMs: number, onChange: () => void): ReturnType<typeof setInterval> {
  let seen: string | undefined;
  const signature = () => {
    try {
      const stat = statSync(file);
      return `${stat.ino}:${stat.size}:${stat.mtimeMs}:${stat.ctimeMs}`;
    } catch (error) {
      return `missing:${(error as NodeJS.ErrnoException).code ?? ""}`;
    }
  };
  const timer = setInterval(() => {
    const now = signature();
    if (now !== seen) {
      seen = now;
      onChange();
    }
  }, intervalMs);
  timer.unref();
  return timer;
}

/** fs.watch on the file's folder, for changes to that name; undefined where watching is not possible (the poll covers it). */
function watchFolderOf(file: string, onChange: () => void): FSWatcher | undefined {
  const base = path.basename(file);
  try {
    const watcher = watch(path.dirname(file), { persistent: false }, (_event, name) => {
      if (name === null || name.toString() === base) onChange();
    });
    watcher.on("error", () => undefined);
    return watcher;
  } catch {
    return undefined;
  }
}

function safeEntries(env: TokenSources, readFile: ReadTokenFile | undefined): unknown {
  try {
    return loadTokenEntries(env, readFile);
  } catch {
    return undefined;
  }
}
