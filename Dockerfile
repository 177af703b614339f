# Images of the builder itself: `docker build --target api .` and `--target worker`.
# NODE_IMAGE is the Node 20 base; machines that cannot pull use the stand-in that
# scripts/base-images.sh builds from Debian packages (m1l0-local/node:20-bookworm-slim).
# Written for the classic builder too (docker-compose 1.29 builds with it): no RUN --mount.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
# A TLS-intercepting proxy's CA certificate (PEM text), for build hosts that reach the npm
# registry only through one; empty otherwise. It stays in this stage, never in the images.
ARG EXTRA_CA_CERTS=""
RUN printf '%s\n' "$EXTRA_CA_CERTS" > /tmp/build-ca.pem
ENV NODE_EXTRA_CA_CERTS=/tmp/build-ca.pem npm_config_update_notifier=false
RUN npm i -g --no-fund --no-audit pnpm@10.34.9
WORKDIR /src
# dependencies first: this layer is reused until the lockfile changes
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml .npmrc tsconfig.base.json turbo.json ./
RUN pnpm fetch --reporter=append-only
# only what the two apps are built from: other changes (docs, tests, scripts) reuse the cache
COPY packages packages
COPY apps/api apps/api
COPY apps/worker apps/worker
RUN pnpm install --offline --frozen-lockfile --reporter=append-only \
      --filter "@m1l0/api..." --filter "@m1l0/worker..." --filter m1l0-image-builder \
 && pnpm turbo run build --filter=@m1l0/api --filter=@m1l0/worker --output-logs=errors-only \
 && pnpm --filter @m1l0/api deploy --legacy --prod /out/api \
 && pnpm --filter @m1l0/worker deploy --legacy --prod /out/worker \
 && rm -rf /out/*/src /out/*/test /out/*/tsconfig*.json

FROM ${NODE_IMAGE} AS api
ENV NODE_ENV=production HOST=0.0.0.0 PORT=8080 GRPC_HOST=0.0.0.0 GRPC_PORT=50051
WORKDIR /app
COPY --from=build /out/api /app
# the API never touches a Docker daemon: it runs unprivileged
USER node
EXPOSE 8080 50051
# liveness only (/healthz): a Redis outage makes /readyz fail, which must not restart every replica
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node is pid 1 and handles SIGTERM itself: stops listening, closes the queue and Redis
STOPSIGNAL SIGTERM
CMD ["node", "dist/server.js"]

FROM ${NODE_IMAGE} AS worker
ENV NODE_ENV=production HEALTH_FILE=/tmp/m1l0-worker.health HEALTH_INTERVAL_SECONDS=10 WORK_DIR=/var/lib/m1l0/work
# iptables: the worker installs its build network's egress rules (BUILD_EGRESS public/proxy)
# when it runs in its daemon's network namespace with NET_ADMIN (docker-compose.yml does)
RUN apt-get update && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log
WORKDIR /app
COPY --from=build /out/worker /app
RUN mkdir -p /var/lib/m1l0/work
# root on purpose: it drives a Docker daemon (the host's socket, or a DinD sidecar) and creates
# per-build pids cgroups; the socket is root on that host anyway (SECURITY.md, "Deployment")
# healthy while the health file is fresh: the worker rewrites it every HEALTH_INTERVAL_SECONDS
# while Redis and its daemon answer
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const f=process.env.HEALTH_FILE,s=require('fs').statSync(f);process.exit(Date.now()-s.mtimeMs<3000*Number(process.env.HEALTH_INTERVAL_SECONDS||10)?0:1)"]
# SIGTERM: stop taking jobs, let running builds finish for WORKER_SHUTDOWN_GRACE_SECONDS,
# then requeue them; give the container a longer stop timeout than that grace
STOPSIGNAL SIGTERM
CMD ["node", "dist/main.js"]
