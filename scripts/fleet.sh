#!/usr/bin/env bash
# Extra, independent Docker daemons for fleet tests and benchmarks: daemon k (2..N) gets
# its own data root, exec root, socket /var/run/docker-w<k>.sock and its own bridge
# (a daemon started without one deletes docker0 of the first daemon; see ENVIRONMENT.md).
# The local base images are copied into each from the default daemon (docker save | load).
# usage: scripts/fleet.sh up [N=3] | down [N=3] | sockets [N=3]
source "$(dirname "$0")/lib.sh"

count="${2:-3}"
run_dir="$M1L0_STATE_DIR/run"
log_dir="$M1L0_STATE_DIR/log"
mkdir -p "$run_dir" "$log_dir"

socket_of() { echo "/var/run/docker-w$1.sock"; }

up_daemon() {
  local k="$1" bridge="m1l0br$1" socket; socket="$(socket_of "$1")"
  if DOCKER_HOST="unix://$socket" docker info >/dev/null 2>&1; then return; fi
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add "$bridge" type bridge
    ip addr add "172.31.$((100 + k)).1/24" dev "$bridge"
    ip link set "$bridge" up
  fi
  log "starting dockerd #$k on $socket (bridge $bridge)"
  setsid nohup dockerd --data-root "/var/lib/docker-w$k" --exec-root "/var/run/docker-w$k" \
    -H "unix://$socket" --pidfile "/var/run/docker-w$k.pid" \
    --bridge "$bridge" --iptables=false --ip-masq=false >>"$log_dir/dockerd-w$k.log" 2>&1 < /dev/null &
  wait_for "dockerd #$k" 60 env DOCKER_HOST="unix://$socket" docker info
}

load_base_images() {
  # The same image (same id, same history) as on the default daemon, copied with save | load:
  # the classic builder reuses layers of a pulled image (cache-from) only when the base image
  # underneath is identical, as it is in production where every daemon pulls the same public image.
  local socket image want have; socket="$(socket_of "$1")"
  for image in "$BASE_IMAGE_PYTHON" "$BASE_IMAGE_BUSYBOX" "$BASE_IMAGE_PYTORCH"; do
    # the PyTorch base is optional (`base-images.sh pytorch`, benchmark 10): copied when the default daemon has it
    if [ "$image" = "$BASE_IMAGE_PYTORCH" ] && ! DOCKER_HOST=unix:///var/run/docker.sock docker image inspect "$image" >/dev/null 2>&1; then continue; fi
    want="$(DOCKER_HOST=unix:///var/run/docker.sock docker image inspect -f '{{.Id}}' "$image")" \
      || die "run scripts/base-images.sh first ($image is missing on the default daemon)"
    have="$(DOCKER_HOST="unix://$socket" docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
    if [ "$have" != "$want" ]; then
      log "copying $image to dockerd #$1"
      DOCKER_HOST=unix:///var/run/docker.sock docker save "$image" | DOCKER_HOST="unix://$socket" docker load -q >/dev/null
    fi
  done
}

case "${1:-up}" in
  up)
    need_root
    for k in $(seq 2 "$count"); do up_daemon "$k"; load_base_images "$k"; done
    log "fleet daemons ready: $(for k in $(seq 2 "$count"); do printf '%s ' "$(socket_of "$k")"; done)"
    ;;
  down)
    for k in $(seq 2 "$count"); do
      pidfile="/var/run/docker-w$k.pid"
      if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then kill "$(cat "$pidfile")"; fi
    done
    ;;
  sockets) for k in $(seq 2 "$count"); do socket_of "$k"; done ;;
  *) die "usage: $0 up|down|sockets [N]" ;;
esac
