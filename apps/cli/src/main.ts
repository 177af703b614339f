#!/usr/bin/env node
import { runCli } from "./cli.js";
import { loadCliEnv } from "./env.js";

const interrupt = new AbortController();
process.once("SIGINT", () => interrupt.abort());
process.exitCode = await runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: loadCliEnv(), signal: interrupt.signal });
