#!/usr/bin/env bash
# A multi-node Docker Swarm on this one machine, for the deployment tests: every node is a
# container running its own nested dockerd, with its own /var/lib/docker volume, hostname and
# address on a bridge network of its own. The host's own daemon never joins a swarm.
#   scripts/swarm.sh image                 build the node image (debootstrap, cached)
#   scripts/swarm.sh node NAME INDEX       start node NAME at ${SWARM_SUBNET_PREFIX}.(10+INDEX)
#   scripts/swarm.sh load NAME IMAGE...    copy host images into a node (docker save | load)
#   scripts/swarm.sh down                  remove every node, its volume and the network
# `--privileged` fails on these machines (root lacks CAP_SYS_RESOURCE), so a node gets every
# other capability, no seccomp/AppArmor profile and the host's cgroup tree: what dockerd needs.
source "$(dirname "$0")/lib.sh"
need_root

export SWARM_NODE_IMAGE="${SWARM_NODE_IMAGE:-m1l0-local/swarm-node:bookworm}"
export SWARM_NETWORK="${SWARM_NETWORK:-m1l0-swarm}"
export SWARM_SUBNET_PREFIX="${SWARM_SUBNET_PREFIX:-10.213.0}"
NODE_LABEL=ai.m1l0.swarm-node

image() {
  docker image inspect "$SWARM_NODE_IMAGE" >/dev/null 2>&1 && return 0
  local tarball
  tarball="$(debootstrap_cached swarm-node docker.io,iptables,iproute2,ca-certificates,procps)"
  log "importing $SWARM_NODE_IMAGE"
  docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["dockerd"]' "$tarball" "$SWARM_NODE_IMAGE" >/dev/null
}

network() {
  docker network inspect "$SWARM_NETWORK" >/dev/null 2>&1 && return 0
  docker network create --driver bridge --subnet "$SWARM_SUBNET_PREFIX.0/24" \
    --label "$NODE_LABEL=1" "$SWARM_NETWORK" >/dev/null
}

node() {
  local name="$1" index="$2" ip="$SWARM_SUBNET_PREFIX.$((10 + $2))"
  image; network
  if [ "$(docker inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" != true ]; then
    docker rm -f "$name" >/dev/null 2>&1 || true
    log "starting swarm node $name ($ip)"
    # DOCKER_SERVICE_PREFER_OFFLINE_IMAGE: tasks use the node's local image instead of asking
    # a registry first (nothing can be pulled here); registries on the node subnet are plain HTTP
    docker run -d --init --name "$name" --hostname "$name" --label "$NODE_LABEL=1" \
      --network "$SWARM_NETWORK" --ip "$ip" \
      --cap-add ALL --cap-drop SYS_RESOURCE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /tmp \
      -v "$name-docker:/var/lib/docker" \
      -e DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 \
      "$SWARM_NODE_IMAGE" dockerd --host unix:///var/run/docker.sock \
      --insecure-registry "$SWARM_SUBNET_PREFIX.0/24" --cgroup-parent "/$name" >/dev/null
  fi
  wait_for "dockerd in $name" 60 docker exec "$name" docker info
  printf '%s\n' "$ip"
}

load() {
  local name="$1"; shift
  local wanted=()
  for img in "$@"; do
    # skip what the node already has (same image id)
    local id; id="$(docker image inspect -f '{{.Id}}' "$img")"
    [ "$(docker exec "$name" docker image inspect -f '{{.Id}}' "$img" 2>/dev/null)" = "$id" ] || wanted+=("$img")
  done
  ((${#wanted[@]})) || return 0
  log "loading into $name: ${wanted[*]}"
  # one `docker save` per set of images, reused for every node that needs the same set
  local dir="$M1L0_STATE_DIR/swarm" key tar
  key="$(for img in "${wanted[@]}"; do docker image inspect -f '{{.Id}}' "$img"; done | sha256sum | cut -c1-16)"
  tar="$dir/images-$key.tar"
  mkdir -p "$dir"
  if [ ! -s "$tar" ]; then docker save "${wanted[@]}" -o "$tar.tmp" && mv "$tar.tmp" "$tar"; fi
  docker exec -i "$name" docker load -q <"$tar" >/dev/null
}

down() {
  local ids; ids="$(docker ps -aq --filter "label=$NODE_LABEL")"
  if [ -n "$ids" ]; then
    for id in $ids; do
      local name; name="$(docker inspect -f '{{.Name}}' "$id")"; name="${name#/}"
      docker rm -f "$id" >/dev/null
      docker volume rm -f "$name-docker" >/dev/null 2>&1 || true
      log "removed swarm node $name"
    done
  fi
  docker network rm "$SWARM_NETWORK" >/dev/null 2>&1 || true
  rm -rf "$M1L0_STATE_DIR/swarm"
  # the nodes' cgroup parents (their containers' cgroups are gone with them)
  for dir in /sys/fs/cgroup/*/m1l0-swarm-*; do [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null; done
  return 0
}

case "${1:-}" in
  image) image ;;
  node) [ $# -eq 3 ] || die "usage: $0 node NAME INDEX"; node "$2" "$3" ;;
  load) [ $# -ge 3 ] || die "usage: $0 load NAME IMAGE..."; name="$2"; shift 2; load "$name" "$@" ;;
  down) down ;;
  *) die "usage: $0 image | node NAME INDEX | load NAME IMAGE... | down" ;;
esac
