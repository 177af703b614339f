#!/usr/bin/env bash
# Installs what the project needs on a Debian machine, idempotently:
# Debian packages (docker engine, docker-compose, redis, registry, htpasswd, debootstrap, busybox, dpkg-dev),
# pnpm, the workspace's dependencies, and a build of every package.
source "$(dirname "$0")/lib.sh"
need_root

APT_PACKAGES=(docker.io docker-compose iptables dpkg-dev redis-server docker-registry apache2-utils debootstrap busybox-static iproute2 git curl ca-certificates chromium)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # the Debian registry package starts its own service on :5000 with its own config;
  # ours runs with the project's config instead.
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
  pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
fi

if ! command -v pnpm >/dev/null 2>&1; then
  log "installing pnpm"
  npm i -g pnpm@10 >/dev/null 2>&1
fi

cd "$ROOT_DIR"
log "installing workspace dependencies"
pnpm install --frozen-lockfile --reporter=silent 2>/dev/null || pnpm install --reporter=silent
log "building packages"
pnpm -s turbo run build --output-logs=errors-only
