# Shared settings for the project's scripts. Sourced, never run.
# Every value can be overridden from the environment (see .env.example).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT_DIR
# Service state (data dirs, logs, pid files) lives outside the clone so that a fresh
# clone reuses an already-running stack and the base-image cache.
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1
export M1L0_STATE_DIR="${M1L0_STATE_DIR:-/var/lib/m1l0-dev}"
export M1L0_CACHE_DIR="${M1L0_CACHE_DIR:-/var/cache/m1l0}"

export REDIS_PORT="${REDIS_PORT:-6379}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:${REDIS_PORT}}"
export REGISTRY_PORT="${REGISTRY_PORT:-5000}"
export REGISTRY_HOST="${REGISTRY_HOST:-127.0.0.1:${REGISTRY_PORT}}"
export REGISTRY_USERNAME="${REGISTRY_USERNAME:-m1l0}"
# Dev/test-only password for the local registry; production credentials come from the
# worker's environment or secret files, never from this file.
export REGISTRY_PASSWORD="${REGISTRY_PASSWORD:-m1l0-local-registry-pw}"
export S3_PORT="${S3_PORT:-4569}"
export S3_ENDPOINT="${S3_ENDPOINT:-http://127.0.0.1:${S3_PORT}}"
export S3_BUCKET="${S3_BUCKET:-m1l0-builds}"
export GIT_SERVER_PORT="${GIT_SERVER_PORT:-8174}"
export GIT_SERVER_URL="${GIT_SERVER_URL:-http://127.0.0.1:${GIT_SERVER_PORT}}"
export GIT_FIXTURES_DIR="${GIT_FIXTURES_DIR:-${M1L0_STATE_DIR}/git}"
export GIT_PRIVATE_USERNAME="${GIT_PRIVATE_USERNAME:-m1l0-bot}"
export GIT_PRIVATE_TOKEN="${GIT_PRIVATE_TOKEN:-m1l0-local-git-token}"
export BASE_IMAGE_PYTHON="${BASE_IMAGE_PYTHON:-m1l0-local/python:3.11-bookworm}"
# Debian's python3-torch 1.13.1 for python 3.11 (packages/catalog/local-additions.yaml)
export BASE_IMAGE_PYTORCH="${BASE_IMAGE_PYTORCH:-m1l0-local/pytorch:1.13.1-py3.11}"
export BASE_IMAGE_BUSYBOX="${BASE_IMAGE_BUSYBOX:-m1l0-local/busybox:latest}"
# stand-in for the public node:20-bookworm-slim, the base of the service's own images
export BASE_IMAGE_NODE="${BASE_IMAGE_NODE:-m1l0-local/node:20-bookworm-slim}"
export BASE_IMAGE_STANDINS="${BASE_IMAGE_STANDINS:-m1l0-local/node-services:bookworm}"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33mwarn:\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.2 s.
wait_for() {
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then die "$what did not come up within ${limit}s"; fi
    sleep 0.2
  done
}

# debootstrap_cached NAME PACKAGES: prints the path of a Debian bookworm minbase rootfs tarball
# with PACKAGES, made once and cached in $M1L0_CACHE_DIR (debootstrap takes 30-90 s)
debootstrap_cached() {
  local name="$1" include="$2" tarball="$M1L0_CACHE_DIR/$1-bookworm-rootfs.tar"
  mkdir -p "$M1L0_CACHE_DIR"
  if [ ! -s "$tarball" ]; then
    log "debootstrapping a Debian bookworm $name rootfs (once; cached in $tarball)"
    local rootfs; rootfs="$(mktemp -d)"
    debootstrap --variant=minbase --include="$include" \
      bookworm "$rootfs" http://deb.debian.org/debian >"$M1L0_CACHE_DIR/debootstrap-$name.log" 2>&1 \
      || { tail -20 "$M1L0_CACHE_DIR/debootstrap-$name.log" >&2; die "debootstrap failed"; }
    # what a slim image leaves out: package caches, docs, man pages, locales
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  printf '%s\n' "$tarball"
}

need_root() {
  [ "$(id -u)" = 0 ] || die "run as root: the scripts install Debian packages and start dockerd"
}

# the service's own images (root Dockerfile, targets api and worker), built on $BASE_IMAGE_NODE
export M1L0_API_IMAGE="${M1L0_API_IMAGE:-m1l0-local/api:dev}"
export M1L0_WORKER_IMAGE="${M1L0_WORKER_IMAGE:-m1l0-local/worker:dev}"
# stand-ins for the public redis, minio and registry images (deploy/local/Dockerfile)
export M1L0_STANDIN_IMAGE="${M1L0_STANDIN_IMAGE:-m1l0-local/stand-ins:dev}"
