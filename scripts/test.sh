#!/usr/bin/env bash
# Runs every test against real services (docker engine, redis, registry, S3, git server),
# installing and starting whatever is missing first. Ends with the plain line
#   tests: N passed, N failed
# Extra arguments go to vitest (e.g. a file filter).
source "$(dirname "$0")/lib.sh"
need_root

bash "$ROOT_DIR/scripts/install.sh"
bash "$ROOT_DIR/scripts/services.sh" up
bash "$ROOT_DIR/scripts/base-images.sh" pytorch  # examples/pytorch-mnist e2e
# tests/deploy: the service's own images (root Dockerfile) and the stand-ins, and the node
# image of the swarm test (rootfs tarballs cached in $M1L0_CACHE_DIR, layers in Docker's cache)
bash "$ROOT_DIR/scripts/service-images.sh"
bash "$ROOT_DIR/scripts/swarm.sh" image
bash "$ROOT_DIR/scripts/fleet.sh" up 3  # daemons 2 and 3 for the fleet e2e test

export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
export CATALOG_OVERRIDES_FILE="$ROOT_DIR/packages/catalog/local-overrides.yaml"
export CATALOG_ADDITIONS_FILE="$ROOT_DIR/packages/catalog/local-additions.yaml"
cd "$ROOT_DIR"
log "typechecking and linting"
pnpm -s turbo run typecheck lint --output-logs=errors-only
results="$ROOT_DIR/test-results/vitest.json"
mkdir -p "$(dirname "$results")"
rm -f "$results"
log "running tests"
set +e
pnpm -s vitest run --reporter=default --reporter=json --outputFile.json="$results" "$@"
status=$?
set -e
if [ ! -s "$results" ]; then
  echo "tests: 0 passed, 1 failed"
  die "vitest wrote no results (exit $status)"
fi
node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  const failed = r.numFailedTests + (r.numFailedTestSuites > 0 && r.numFailedTests === 0 ? r.numFailedTestSuites : 0);
  console.log(`tests: ${r.numPassedTests} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ""));
' "$results"
exit $status
