#!/usr/bin/env bash
# (Re)creates the bare git repositories the local git HTTP server serves:
#   examples/mnist.git   public copy of examples/mnist (branch main, tag v1)
#   private/mnist.git    the same, behind HTTP basic auth (token-protected repo)
#   examples/pytorch-mnist.git  public copy of examples/pytorch-mnist (branch main, tag v1)
source "$(dirname "$0")/lib.sh"

make_repo() {
  local src="$1" bare="$2"
  local work; work="$(mktemp -d)"
  cp -a "$src/." "$work/"
  git -C "$work" init -q -b main
  git -C "$work" -c user.name=m1l0 -c user.email=m1l0@localhost add -A
  git -C "$work" -c user.name=m1l0 -c user.email=m1l0@localhost commit -q -m "$(basename "$src") example"
  git -C "$work" tag v1
  rm -rf "$bare.tmp"
  git clone -q --bare "$work" "$bare.tmp"
  git -C "$bare.tmp" symbolic-ref HEAD refs/heads/main
  git -C "$bare.tmp" update-server-info
  rm -rf "$bare"; mv "$bare.tmp" "$bare"
  rm -rf "$work"
}

mkdir -p "$GIT_FIXTURES_DIR/examples" "$GIT_FIXTURES_DIR/private"
make_repo "$ROOT_DIR/examples/mnist" "$GIT_FIXTURES_DIR/examples/mnist.git"
make_repo "$ROOT_DIR/examples/mnist" "$GIT_FIXTURES_DIR/private/mnist.git"
make_repo "$ROOT_DIR/examples/pytorch-mnist" "$GIT_FIXTURES_DIR/examples/pytorch-mnist.git"
printf "%s:%s\n" "$GIT_PRIVATE_USERNAME" "$GIT_PRIVATE_TOKEN" > "$GIT_FIXTURES_DIR/private/mnist.git/m1l0-credentials"
