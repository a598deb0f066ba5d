#!/usr/bin/env bash
# The test command (README): installs what is missing, checks formatting and
# lints, then runs every test of the workspace. Run as root: the end-to-end tests
# create network namespaces and iptables rules.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "tests/run.sh: run as root (the tests create network namespaces)" >&2
  exit 1
fi
bash tests/install-deps.sh
export MESH_TOOLS_VENV=${MESH_TOOLS_VENV:-/opt/mesh-tools}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build (every binary: end-to-end tests chain several of them)"
cargo build --workspace --bins --quiet
echo "== cargo test"
cargo test --workspace --no-fail-fast
