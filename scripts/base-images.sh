#!/usr/bin/env bash
# Builds the local base images that stand in for the public catalog images, because
# nothing can be pulled from a registry on these machines:
#   $BASE_IMAGE_PYTHON   Debian bookworm minbase + python3, numpy, pip (debootstrap)
#   $BASE_IMAGE_BUSYBOX  busybox-static in a scratch image, for fast tests
# The debootstrap rootfs tarball is cached in $M1L0_CACHE_DIR so later runs only import.
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
log "base images ready: $BASE_IMAGE_PYTHON, $BASE_IMAGE_BUSYBOX"
