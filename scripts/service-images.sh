#!/usr/bin/env bash
# Builds the service's own images from the root Dockerfile on the local Node base
# (scripts/base-images.sh), since the public node image cannot be pulled here:
#   $M1L0_API_IMAGE (target api), $M1L0_WORKER_IMAGE (target worker)
# and the stand-ins for the public redis, minio and registry images the compose file names
# (deploy/local/Dockerfile: Debian's redis-server and docker-registry, s3rver from npm):
#   $M1L0_STANDIN_IMAGE
# The build stage installs from the npm registry; the CAs added locally to this host's trust
# store (/usr/local/share/ca-certificates, e.g. a TLS-intercepting proxy's) are given to it.
# Prints each image's size. Docker's layer cache makes a rebuild without changes take seconds.
source "$(dirname "$0")/lib.sh"
need_root

bash "$ROOT_DIR/scripts/base-images.sh"
ca_args=()
local_cas=(/usr/local/share/ca-certificates/*.crt)
if [ -e "${local_cas[0]}" ]; then ca_args=(--build-arg "EXTRA_CA_CERTS=$(cat "${local_cas[@]}")"); fi
for target in api worker; do
  image="$M1L0_API_IMAGE"; [ "$target" = worker ] && image="$M1L0_WORKER_IMAGE"
  log "building $image (Dockerfile target $target, base $BASE_IMAGE_NODE)"
  started=$SECONDS
  DOCKER_BUILDKIT=0 docker build -q --target "$target" --build-arg "NODE_IMAGE=$BASE_IMAGE_NODE" \
    "${ca_args[@]}" -t "$image" "$ROOT_DIR" >/dev/null
  size=$(docker image inspect -f '{{.Size}}' "$image")
  log "$image: $((size / 1000000)) MB, built in $((SECONDS - started)) s"
done
log "building $M1L0_STANDIN_IMAGE (redis-server, docker-registry, s3rver)"
started=$SECONDS
DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$BASE_IMAGE_STANDINS" "${ca_args[@]}" \
  -t "$M1L0_STANDIN_IMAGE" "$ROOT_DIR/deploy/local" >/dev/null
log "$M1L0_STANDIN_IMAGE: $(($(docker image inspect -f '{{.Size}}' "$M1L0_STANDIN_IMAGE") / 1000000)) MB, built in $((SECONDS - started)) s"
