#!/usr/bin/env node
// A real git smart-HTTP server for the demo and tests: git's own `git http-backend`
// (CGI) behind Node's http module. Serves every bare repository under GIT_SERVER_ROOT.
// A repository holding a file `m1l0-credentials` ("user:token" per line) requires HTTP
// basic auth with one of those pairs, like a private repository on a git host.
//   GIT_SERVER_ROOT=/srv/git GIT_SERVER_PORT=8174 node scripts/git-server.mjs
import { spawn } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import { timingSafeEqual } from "node:crypto";

const root = path.resolve(process.env.GIT_SERVER_ROOT ?? ".");
const port = Number(process.env.GIT_SERVER_PORT ?? 8174);
const host = process.env.GIT_SERVER_BIND ?? "127.0.0.1";

function repoDirOf(pathname) {
  const match = /^\/(.+?\.git)(\/.*)?$/.exec(pathname);
  if (!match) return undefined;
  const dir = path.resolve(root, "." + path.posix.normalize("/" + match[1]));
  return dir.startsWith(root + path.sep) ? dir : undefined;
}

function authorized(repoDir, header) {
  const file = path.join(repoDir, "m1l0-credentials");
  if (!existsSync(file)) return true;
  if (!header?.startsWith("Basic ")) return false;
  const given = Buffer.from(Buffer.from(header.slice(6), "base64").toString("utf8"));
  return readFileSync(file, "utf8").split("\n").filter(Boolean).some((line) => {
    const expected = Buffer.from(line.trim());
    return expected.length === given.length && timingSafeEqual(expected, given);
  });
}

const server = createServer((req, res) => {
  const url = new URL(req.url ?? "/", "http://localhost");
  const repoDir = repoDirOf(decodeURIComponent(url.pathname));
  if (!repoDir || !existsSync(repoDir)) {
    res.writeHead(404).end("repository not found\n");
    return;
  }
  if (!authorized(repoDir, req.headers.authorization)) {
    res.writeHead(401, { "WWW-Authenticate": 'Basic realm="m1l0-git"' }).end("authentication required\n");
    return;
  }
  const cgi = spawn("git", ["http-backend"], {
    env: {
      PATH: process.env.PATH,
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: "1",
      PATH_INFO: url.pathname,
      REQUEST_METHOD: req.method ?? "GET",
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: req.headers["content-type"] ?? "",
      HTTP_CONTENT_ENCODING: req.headers["content-encoding"] ?? "",
      GIT_PROTOCOL: req.headers["git-protocol"] ?? "",
      REMOTE_ADDR: req.socket.remoteAddress ?? "",
    },
  });
  req.pipe(cgi.stdin);
  cgi.stderr.on("data", (d) => process.stderr.write(d));
  let head = Buffer.alloc(0);
  let headersSent = false;
  cgi.stdout.on("data", (chunk) => {
    if (headersSent) return void res.write(chunk);
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf("\r\n\r\n");
    if (end < 0) return;
    let status = 200;
    for (const line of head.subarray(0, end).toString("latin1").split("\r\n")) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).trim();
      const value = line.slice(colon + 1).trim();
      if (name.toLowerCase() === "status") status = Number.parseInt(value, 10);
      else res.setHeader(name, value);
    }
    res.writeHead(status);
    headersSent = true;
    res.write(head.subarray(end + 4));
  });
  cgi.on("close", () => {
    if (!headersSent) res.writeHead(502);
    res.end();
  });
  cgi.on("error", () => res.destroy());
});

server.listen(port, host, () => console.log(`git server on http://${host}:${port} serving ${root}`));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
