#!/usr/bin/env bash
# Builds the local base images that stand in for the public catalog images, because
# nothing can be pulled from a registry on these machines:
#   $BASE_IMAGE_PYTHON   Debian bookworm minbase + python3, numpy, pip (debootstrap)
#   $BASE_IMAGE_BUSYBOX  busybox-static in a scratch image, for fast tests
#   $BASE_IMAGE_NODE     Debian bookworm minbase + this host's Node 20 (node, npm), laid out
#                        like the public node:20-bookworm-slim (/usr/local, user node 1000)
#   $BASE_IMAGE_STANDINS the same plus Debian's redis-server and docker-registry
#   $BASE_IMAGE_PYTORCH  Debian bookworm minbase + python3-torch 1.13.1 (CPU), numpy, pip; only with
#                        the argument `pytorch` (its rootfs is ~450 packages, 1.2 GB: the demo skips it)
# The debootstrap rootfs tarballs are cached in $M1L0_CACHE_DIR so later runs only import.
#   bash scripts/base-images.sh            # the images every build and test needs
#   bash scripts/base-images.sh pytorch    # those plus the PyTorch base (examples/pytorch-mnist)
source "$(dirname "$0")/lib.sh"
need_root

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

if ! image_exists "$BASE_IMAGE_PYTHON"; then
  mkdir -p "$M1L0_CACHE_DIR"
  tarball="$M1L0_CACHE_DIR/python-bookworm-rootfs.tar"
  if [ ! -s "$tarball" ]; then
    log "debootstrapping a Debian bookworm Python rootfs (~90 s, once; cached in $tarball)"
    rootfs="$(mktemp -d)"
    debootstrap --variant=minbase --include=python3,python3-numpy,python3-pip \
      bookworm "$rootfs" http://deb.debian.org/debian >"$M1L0_CACHE_DIR/debootstrap.log" 2>&1 \
      || { tail -20 "$M1L0_CACHE_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $BASE_IMAGE_PYTHON"
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["python3"]' "$tarball" "$BASE_IMAGE_PYTHON" >/dev/null
fi

if ! image_exists "$BASE_IMAGE_BUSYBOX"; then
  log "building $BASE_IMAGE_BUSYBOX from busybox-static"
  dir="$(mktemp -d)"
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc"
  cp /bin/busybox "$dir/bin/busybox"
  for applet in sh ls cat echo sleep env mkdir rm true false grep wc; do ln -s busybox "$dir/bin/$applet"; done
  tar -C "$dir" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["sh"]' - "$BASE_IMAGE_BUSYBOX" >/dev/null
  rm -rf "$dir"
fi
# node_image IMAGE NAME PACKAGES: a minbase rootfs with PACKAGES (cached) plus this host's Node
# 20 (node, npm) in /usr/local and a user node (1000), as the public node images have them.
# The rootfs is cached without Node, so a Node upgrade on the host needs no new debootstrap.
node_image() {
  local image="$1" name="$2" include="$3"
  image_exists "$image" && return 0
  local node_bin npm_dir tarball work
  node_bin="$(readlink -f "$(command -v node)")"
  "$node_bin" -e 'process.exit(process.versions.node.split(".")[0] === "20" ? 0 : 1)' \
    || die "the node stand-in needs this host's Node to be 20 (found $("$node_bin" --version))"
  npm_dir="$(npm root -g)/npm"
  [ -f "$npm_dir/bin/npm-cli.js" ] || die "npm not found at $npm_dir"
  tarball="$(debootstrap_cached "$name" "$include")"
  log "importing $image (Debian rootfs + this host's Node $("$node_bin" --version))"
  work="$(mktemp -d)"
  tar -C "$work" -xf "$tarball"
  mkdir -p "$work/usr/local/bin" "$work/usr/local/lib/node_modules" "$work/home/node"
  cp "$node_bin" "$work/usr/local/bin/node"
  cp -a "$npm_dir" "$work/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/usr/local/bin/npx"
  echo 'node:x:1000:1000::/home/node:/bin/bash' >>"$work/etc/passwd"
  echo 'node:x:1000:' >>"$work/etc/group"
  chown 1000:1000 "$work/home/node"
  tar -C "$work" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' -c 'ENV NODE_VERSION='"$("$node_bin" -p process.versions.node)" \
    -c 'CMD ["node"]' - "$image" >/dev/null
  rm -rf "$work"
}

node_image "$BASE_IMAGE_NODE" node ca-certificates
# base of the redis/minio/registry stand-ins (deploy/local/Dockerfile adds s3rver from npm)
node_image "$BASE_IMAGE_STANDINS" node-services ca-certificates,redis-server,docker-registry
if [ "${1:-}" = pytorch ] && ! image_exists "$BASE_IMAGE_PYTORCH"; then
  started=$SECONDS
  tarball="$(debootstrap_cached pytorch python3,python3-torch,python3-pip,ca-certificates)"
  log "importing $BASE_IMAGE_PYTORCH"
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["python3"]' "$tarball" "$BASE_IMAGE_PYTORCH" >/dev/null
  log "$BASE_IMAGE_PYTORCH ready in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE_PYTORCH" | awk '{printf "%.0f MB", $1/1e6}'))"
fi
log "base images ready: $BASE_IMAGE_PYTHON, $BASE_IMAGE_BUSYBOX, $BASE_IMAGE_NODE, $BASE_IMAGE_STANDINS"
