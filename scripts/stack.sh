#!/usr/bin/env bash
# Starts (or stops) the builder itself — API + one worker — against the local services,
# configured for this machine: http git sources allowed (the local git server), pushes to
# the local registry as the "dockerhub" target, base images from the local catalog override,
# API authentication on with a local admin token ($M1L0_STATE_DIR/api/admin-token).
# usage: scripts/stack.sh [up|down]
source "$(dirname "$0")/lib.sh"

run_dir="$M1L0_STATE_DIR/run"
log_dir="$M1L0_STATE_DIR/log"
mkdir -p "$run_dir" "$log_dir"
export API_PORT="${API_PORT:-8080}"
export M1L0_API_URL="${M1L0_API_URL:-http://127.0.0.1:$API_PORT}"

stop() {
  for name in api worker; do
    local file="$run_dir/$name.pid"
    if [ -f "$file" ] && kill -0 "$(cat "$file")" 2>/dev/null; then
      kill "$(cat "$file")" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$(cat "$file")" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -f "$file"
  done
}

case "${1:-up}" in
  up)
    stop
    export PORT="$API_PORT" HOST=127.0.0.1
    export ALLOW_HTTP_SOURCES=true
    # the local git server listens on loopback: allowlist it (sources are otherwise refused private addresses)
    export SOURCE_HOST_ALLOWLIST="${SOURCE_HOST_ALLOWLIST:-127.0.0.0/8,::1}"
    export CATALOG_OVERRIDES_FILE="$ROOT_DIR/packages/catalog/local-overrides.yaml"
    export CATALOG_ADDITIONS_FILE="$ROOT_DIR/packages/catalog/local-additions.yaml"
    export DOCKERHUB_REGISTRY="$REGISTRY_HOST" DOCKERHUB_USERNAME="$REGISTRY_USERNAME"
    # the token reaches the worker through a file, the way production secrets do
    token_file="$M1L0_STATE_DIR/registry/token"
    umask 077; printf '%s' "$REGISTRY_PASSWORD" > "$token_file"; umask 022
    export DOCKERHUB_TOKEN_FILE="$token_file"
    export GIT_CREDENTIALS="127.0.0.1:$GIT_SERVER_PORT=$GIT_PRIVATE_USERNAME:$GIT_PRIVATE_TOKEN"
    export S3_FORCE_PATH_STYLE=true AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
    export BUILD_NETWORK="${BUILD_NETWORK:-none}"
    # API tokens: the API reads hashes (API_TOKENS_FILE); the local admin token itself sits in a
    # 0600 file the CLI reads (M1L0_TOKEN_FILE). Created once, kept across restarts.
    api_dir="$M1L0_STATE_DIR/api"
    mkdir -p "$api_dir" && chmod 700 "$api_dir"
    if [ -z "${API_TOKENS_FILE:-}" ]; then
      export API_TOKENS_FILE="$api_dir/tokens"
      if [ ! -s "$api_dir/admin-token" ] || [ ! -s "$API_TOKENS_FILE" ]; then
        rm -f "$api_dir/admin-token"
        node "$ROOT_DIR/apps/cli/dist/main.js" token create --name local-admin --role admin --out "$api_dir/admin-token" > "$API_TOKENS_FILE"
        log "created the local admin API token ($api_dir/admin-token; hashes in $API_TOKENS_FILE)"
      fi
    fi
    setsid nohup node "$ROOT_DIR/apps/api/dist/server.js" >>"$log_dir/api.log" 2>&1 < /dev/null &
    echo $! > "$run_dir/api.pid"
    (setsid nohup node "$ROOT_DIR/apps/worker/dist/main.js" >>"$log_dir/worker.log" 2>&1 < /dev/null & echo $! > "$run_dir/worker.pid")
    wait_for "the API on $M1L0_API_URL" 30 curl -sf "$M1L0_API_URL/readyz"
    log "api on $M1L0_API_URL (log $log_dir/api.log), worker running (log $log_dir/worker.log)"
    log "CLI token: export M1L0_TOKEN_FILE=$M1L0_STATE_DIR/api/admin-token"
    ;;
  down) stop; log "api and worker stopped" ;;
  *) die "usage: $0 [up|down]" ;;
esac
