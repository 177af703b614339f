#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian machine (as root):
# install what is missing → start the services → build the local base image → start the
# API and a worker → submit examples/mnist with the m1l0 CLI (POST /builds) and follow its progress →
# pull the pushed image from the registry and run it, printing the model's accuracy.
source "$(dirname "$0")/lib.sh"
need_root
started=$SECONDS

bash "$ROOT_DIR/scripts/install.sh"
bash "$ROOT_DIR/scripts/services.sh" up
bash "$ROOT_DIR/scripts/base-images.sh"
bash "$ROOT_DIR/scripts/stack.sh" up
export M1L0_API_URL="${M1L0_API_URL:-http://127.0.0.1:${API_PORT:-8080}}"
# the local admin token scripts/stack.sh created (the API refuses requests without a token)
[ -n "${M1L0_TOKEN:-}" ] || export M1L0_TOKEN_FILE="${M1L0_TOKEN_FILE:-$M1L0_STATE_DIR/api/admin-token}"

config="$ROOT_DIR/examples/mnist/m1l0.yaml"
log "submitting $config to $M1L0_API_URL/builds"
# progress goes to stderr (a live view on a terminal); stdout ends with image: / digest: lines
result="$(node "$ROOT_DIR/apps/cli/dist/main.js" build "$config" --follow)" || die "the build failed (see above)"
reference="$(printf '%s' "$result" | sed -n 's/^image: //p')"
[ -n "$reference" ] || die "the build finished without an image reference"

log "pulling $reference from the registry (local copy removed first) and running it"
docker image rm -f "$reference" >/dev/null 2>&1 || true
printf '%s' "$REGISTRY_PASSWORD" | docker login "$REGISTRY_HOST" -u "$REGISTRY_USERNAME" --password-stdin >/dev/null 2>&1
docker pull -q "$reference" >/dev/null
docker logout "$REGISTRY_HOST" >/dev/null 2>&1 || true
docker run --rm --network none "$reference"
log "demo finished in $((SECONDS - started)) s; the API and worker keep running (scripts/stack.sh down stops them)"
