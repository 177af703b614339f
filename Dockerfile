# Images of the builder itself (api, worker) for docker-compose.yml. Not exercised by the
# tests on the development machines (they cannot pull node/docker base images).
FROM node:20-bookworm-slim AS build
WORKDIR /src
RUN npm i -g pnpm@10
COPY . .
RUN pnpm install --frozen-lockfile && pnpm turbo run build && pnpm deploy --filter @m1l0/api --prod /out/api && pnpm deploy --filter @m1l0/worker --prod /out/worker

FROM node:20-bookworm-slim AS api
WORKDIR /app
COPY --from=build /out/api .
USER node
CMD ["node", "dist/server.js"]

FROM node:20-bookworm-slim AS worker
RUN apt-get update && apt-get install -y --no-install-recommends docker.io iptables ca-certificates && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /out/worker .
CMD ["sh", "-c", "dockerd >/var/log/dockerd.log 2>&1 & until docker info >/dev/null 2>&1; do sleep 0.2; done; exec node dist/main.js"]
