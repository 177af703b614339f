#!/usr/bin/env bash
# Times GET /builds pages over a large archive (issue 12): N archived records (default 10,000)
# plus live Redis ones, on a private s3rver (thrown away afterwards, so the shared one is not
# loaded with tens of thousands of objects). Needs the shared Redis (scripts/services.sh up).
#   bash scripts/bench-history.sh [N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT_DIR"
archived="${1:-10000}"
dir="$(mktemp -d /tmp/m1l0-bench-s3.XXXXXX)"
port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
"$ROOT_DIR/node_modules/.bin/s3rver" -d "$dir" -a 127.0.0.1 -p "$port" --silent --configure-bucket m1l0-bench &
s3pid=$!
trap 'kill "$s3pid" 2>/dev/null || true; wait "$s3pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/m1l0-bench" >/dev/null 2>&1 && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
S3_ENDPOINT="http://127.0.0.1:$port" S3_BUCKET=m1l0-bench M1L0_HISTORY_ARCHIVED="$archived" M1L0_HISTORY_DISPOSABLE_S3=1 \
  pnpm -s vitest run --project @m1l0/api apps/api/test/history-paging.test.ts -t "exactly once" 2>&1 | grep -E '\[history\]|×|Tests |Error' || true
