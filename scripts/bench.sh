#!/usr/bin/env bash
# Runs the benchmarks (issues 8 and 17) against real services, installing and starting whatever is
# missing first, like scripts/test.sh. A full run writes BENCHMARKS.md (~10 min);
#   bash scripts/bench.sh --quick     # CI smoke test (< ~2 min), prints the tables only
#   bash scripts/bench.sh --only overhead,codechange,packing,ingress,pickup,fleet,pytorch
# Extra arguments go to the runner (bench/src/main.ts).
source "$(dirname "$0")/lib.sh"
need_root

bash "$ROOT_DIR/scripts/install.sh"
bash "$ROOT_DIR/scripts/services.sh" up
bash "$ROOT_DIR/scripts/base-images.sh" pytorch  # with the PyTorch base: benchmark 10 builds examples/pytorch-mnist
bash "$ROOT_DIR/scripts/fleet.sh" up 3  # daemons 2 and 3: benchmarks 3 (another daemon) and 7 (fleet)

cd "$ROOT_DIR"
# The runner spawns apps/*/dist and its own bench/dist children: build them all first.
pnpm -s turbo run build --output-logs=errors-only
log "running benchmarks"
exec node bench/dist/main.js "$@"
