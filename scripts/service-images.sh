#!/usr/bin/env bash
# Builds the service's own images from the root Dockerfile on the local Node base
# (scripts/base-images.sh), since the public node image cannot be pulled here:
#   $M1L0_API_IMAGE (target api), $M1L0_WORKER_IMAGE (target worker)
# and the stand-ins for the public redis, minio and registry images the compose file names
# (deploy/local/Dockerfile: Debian's redis-server and docker-registry, s3rver from npm):
#   $M1L0_STANDIN_IMAGE
# The build stage installs from the npm registry; the CAs added locally to this host's trust
# store (/usr/local/share/ca-certificates, e.g. a TLS-intercepting proxy's) are given to it.
# The images are labelled with a key of everything they are built from (the Dockerfile, the
# lockfile, apps/api, apps/worker, packages, the base) and saved in $M1L0_CACHE_DIR, so a
# fresh machine with that cache loads them (~15 s) instead of building them (~3-4 min).
source "$(dirname "$0")/lib.sh"
need_root

bash "$ROOT_DIR/scripts/base-images.sh"
ca_args=()
local_cas=(/usr/local/share/ca-certificates/*.crt)
if [ -e "${local_cas[0]}" ]; then ca_args=(--build-arg "EXTRA_CA_CERTS=$(cat "${local_cas[@]}")"); fi

# the inputs of the build stage (what the Dockerfile copies, minus .dockerignore's test dirs)
# and of the base (its cached Debian rootfs, this host's Node)
source_key() {
  cd "$ROOT_DIR"
  {
    sha256sum Dockerfile .dockerignore package.json pnpm-lock.yaml pnpm-workspace.yaml .npmrc tsconfig.base.json turbo.json
    find packages apps/api apps/worker -type f \
      -not -path '*/node_modules/*' -not -path '*/dist/*' -not -path '*/.turbo/*' -not -path '*/test/*' \
      -not -name '*.tsbuildinfo' -not -name '*.log' -not -name '*.md' -print0 | sort -z | xargs -0 sha256sum
    sha256sum "$M1L0_CACHE_DIR/node-bookworm-rootfs.tar"
    node --version
  } | sha256sum | cut -c1-20
}

key="$(source_key)"
cache="$M1L0_CACHE_DIR/service-images-$key.tar"
label_of() { docker image inspect -f '{{index .Config.Labels "ai.m1l0.source-key"}}' "$1" 2>/dev/null || true; }
if [ "$(label_of "$M1L0_API_IMAGE")" = "$key" ] && [ "$(label_of "$M1L0_WORKER_IMAGE")" = "$key" ]; then
  log "$M1L0_API_IMAGE and $M1L0_WORKER_IMAGE are up to date (source key $key)"
elif [ -s "$cache" ]; then
  log "loading $M1L0_API_IMAGE and $M1L0_WORKER_IMAGE from $cache"
  docker load -q -i "$cache" >/dev/null
else
  for target in api worker; do
    image="$M1L0_API_IMAGE"; [ "$target" = worker ] && image="$M1L0_WORKER_IMAGE"
    log "building $image (Dockerfile target $target, base $BASE_IMAGE_NODE)"
    started=$SECONDS
    DOCKER_BUILDKIT=0 docker build -q --target "$target" --build-arg "NODE_IMAGE=$BASE_IMAGE_NODE" \
      --label "ai.m1l0.source-key=$key" "${ca_args[@]}" -t "$image" "$ROOT_DIR" >/dev/null
    log "$image: built in $((SECONDS - started)) s"
  done
  rm -f "$M1L0_CACHE_DIR"/service-images-*.tar
  docker save "$M1L0_API_IMAGE" "$M1L0_WORKER_IMAGE" -o "$cache.tmp" && mv "$cache.tmp" "$cache"
fi
for image in "$M1L0_API_IMAGE" "$M1L0_WORKER_IMAGE"; do
  log "$image: $(($(docker image inspect -f '{{.Size}}' "$image") / 1000000)) MB"
done

# small and quick (Docker's layer cache makes an unchanged rebuild instant)
log "building $M1L0_STANDIN_IMAGE (redis-server, docker-registry, s3rver)"
started=$SECONDS
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE_STANDINS" "${ca_args[@]}" \
  -t "$M1L0_STANDIN_IMAGE" "$ROOT_DIR/deploy/local" >/dev/null
log "$M1L0_STANDIN_IMAGE: $(($(docker image inspect -f '{{.Size}}' "$M1L0_STANDIN_IMAGE") / 1000000)) MB, built in $((SECONDS - started)) s"
