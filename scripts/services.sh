#!/usr/bin/env bash
# Starts (or stops, or reports on) the real services the builder and its tests use:
#   dockerd · redis (AOF, noeviction) · registry (htpasswd) · s3rver · git HTTP server
# Idempotent: a service that already answers is left alone.
# usage: scripts/services.sh [up|down|status|env]
source "$(dirname "$0")/lib.sh"

run_dir="$M1L0_STATE_DIR/run"
log_dir="$M1L0_STATE_DIR/log"
mkdir -p "$run_dir" "$log_dir"

# start_daemon NAME COMMAND...: detached from this shell so it outlives the script.
start_daemon() {
  local name="$1"; shift
  setsid nohup "$@" >>"$log_dir/$name.log" 2>&1 < /dev/null &
  echo $! > "$run_dir/$name.pid"
}

stop_pidfile() {
  local name="$1" file="$run_dir/$1.pid"
  if [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then
    kill "$(cat "$file")" 2>/dev/null || true
    log "stopped $name"
  fi
  rm -f "$file"
}

docker_up() { docker info >/dev/null 2>&1; }
redis_up() { redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
registry_up() { [ "$(curl -s --max-time 3 -o /dev/null -w "%{http_code}" "http://$REGISTRY_HOST/v2/")" = 401 ]; }
s3_up() { curl -sf --max-time 3 -o /dev/null "$S3_ENDPOINT/"; }
git_up() { curl -sf --max-time 3 -o /dev/null "$GIT_SERVER_URL/examples/mnist.git/info/refs?service=git-upload-pack"; }

up_docker() {
  if docker_up; then return; fi
  log "starting dockerd"
  start_daemon dockerd dockerd
  wait_for dockerd 60 docker_up
}

up_redis() {
  if redis_up; then return; fi
  log "starting redis on :$REDIS_PORT (appendonly, noeviction)"
  mkdir -p "$M1L0_STATE_DIR/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
    --appendonly yes --maxmemory-policy noeviction \
    --dir "$M1L0_STATE_DIR/redis" --pidfile "$run_dir/redis.pid" \
    --logfile "$log_dir/redis.log" >/dev/null
  wait_for redis 20 redis_up
}

up_registry() {
  if registry_up; then return; fi
  log "starting registry on $REGISTRY_HOST (htpasswd auth)"
  local dir="$M1L0_STATE_DIR/registry"
  mkdir -p "$dir/data"
  htpasswd -Bbn "$REGISTRY_USERNAME" "$REGISTRY_PASSWORD" > "$dir/htpasswd"
  cat > "$dir/config.yml" <<YAML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $dir/data }
  delete: { enabled: true }
http:
  addr: $REGISTRY_HOST
  headers: { X-Content-Type-Options: [nosniff] }
auth:
  htpasswd: { realm: m1l0-registry, path: $dir/htpasswd }
YAML
  start_daemon registry docker-registry serve "$dir/config.yml"
  wait_for registry 30 registry_up
}

up_s3() {
  if s3_up; then return; fi
  log "starting s3rver on $S3_ENDPOINT (bucket $S3_BUCKET)"
  mkdir -p "$M1L0_STATE_DIR/s3"
  start_daemon s3rver "$ROOT_DIR/node_modules/.bin/s3rver" -d "$M1L0_STATE_DIR/s3" \
    -a 127.0.0.1 -p "$S3_PORT" --silent --configure-bucket "$S3_BUCKET"
  wait_for s3rver 30 s3_up
}

up_git() {
  bash "$ROOT_DIR/scripts/git-fixtures.sh"
  if git_up; then return; fi
  log "starting git HTTP server on $GIT_SERVER_URL serving $GIT_FIXTURES_DIR"
  start_daemon git-server env GIT_SERVER_ROOT="$GIT_FIXTURES_DIR" GIT_SERVER_PORT="$GIT_SERVER_PORT" \
    node "$ROOT_DIR/scripts/git-server.mjs"
  wait_for "git server" 20 git_up
}

case "${1:-up}" in
  up)
    need_root
    [ -x "$ROOT_DIR/node_modules/.bin/s3rver" ] || die "run scripts/install.sh first (node_modules missing)"
    up_docker; up_redis; up_registry; up_s3; up_git
    log "services up"
    ;;
  down)
    for s in git-server s3rver registry; do stop_pidfile "$s"; done
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    stop_pidfile dockerd
    ;;
  status)
    for s in docker redis registry s3 git; do
      if "${s}_up"; then echo "$s: up"; else echo "$s: down"; fi
    done
    ;;
  env)
    # prints the variables the apps and tests need to reach these services
    cat <<ENV
REDIS_URL=$REDIS_URL
REGISTRY_HOST=$REGISTRY_HOST
REGISTRY_USERNAME=$REGISTRY_USERNAME
REGISTRY_PASSWORD=$REGISTRY_PASSWORD
S3_ENDPOINT=$S3_ENDPOINT
S3_BUCKET=$S3_BUCKET
GIT_SERVER_URL=$GIT_SERVER_URL
ENV
    ;;
  *) die "usage: $0 [up|down|status|env]" ;;
esac
