#!/usr/bin/env bash
# Regenerates proxy/symbol-order.txt, the order in which lld lays out the
# sidecar's functions (proxy/build.rs): what an idle sidecar has run first, so
# those pages sit together. Runs the release mesh-proxy under callgrind
#   1. starting in a throwaway network namespace and answering a health probe;
#   2. as both sidecars of `mesh-bench --quick` (mTLS off, then on) over the
#      HTTP/1.1, h2c and TCP scenarios (slowly: callgrind is ~50x slower);
# and maps the instructions it ran to functions with the build's link map.
# Root (network namespaces), valgrind, python3; about 5 minutes after the
# release build. Then rebuild: cargo build --release -p mesh-proxy.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib/sidecar-under-callgrind.sh
[ "$(id -u)" = 0 ] || { echo "generate.sh: run as root (network namespaces)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "generate.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
work=$(mktemp -d /tmp/symbol-order.XXXXXX)
chmod 777 "$work" # the bench's sidecars run as UID 1337
ns=symorder-$$
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
cg=(valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no)

echo "== release build, with its link map"
MESH_PROXY_LINK_MAP="$work/mesh-proxy.map" cargo build --release -p mesh-proxy --bin mesh-proxy
cargo build --release --bins -p mesh-bench -p mesh-cni -p mesh-agent
rel=$PWD/target/release

echo "== 1. start-up and a health probe"
cat > "$work/view.json" <<'VIEW'
{"version":1,"services":[{"hostname":"bench.default.svc.cluster.local","namespace":"default","origin":"Kubernetes","addresses":["10.96.0.10"],"ports":[{"name":"http","port":8080,"targetPort":8080,"protocol":"HTTP"},{"name":"tcp","port":9000,"targetPort":9000,"protocol":"TCP"}],"endpoints":[{"address":"10.88.0.3","ports":{},"labels":{"app":"bench-server"},"locality":"","ready":true,"serviceAccount":null}],"exportTo":[],"location":null,"resolution":null,"subjectAltNames":[]}],"virtualServices":{},"destinationRules":{},"outboundTrafficPolicy":"ALLOW_ANY","inbound":{"mtlsMode":"PERMISSIVE","portMtls":{},"authorization":{}}}
VIEW
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" "${cg[@]}" --callgrind-out-file="$work/startup.out" \
  "$rel/mesh-proxy" --view-file "$work/view.json" --pod p --namespace default \
  --service-account sa --labels app=x --instance-ip 127.0.0.1 --concurrency 1 \
  > "$work/startup.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  grep -q "mesh-proxy bound" "$work/startup.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/startup.log" >&2; exit 1; }
  sleep 0.1
done
ip netns exec "$ns" curl -sf -o /dev/null --retry 20 --retry-connrefused --retry-delay 1 \
  http://127.0.0.1:15021/healthz/ready
kill -INT "$pid"
wait "$pid" || true

echo "== 2. the bench's sidecars (callgrind dumps every 5M blocks: the bench kills its pods)"
bench_dir "$rel" "$work"
for v in mesh-proxy mesh-proxy-mtls; do
  sidecar_wrapper "$work" "$rel/mesh-proxy" "$work/$v" "${cg[@]}" --dump-every-bb=5000000
  "$work/bin/mesh-bench" --quick --variants "$v" --out "$work/$v/results" \
    --scenarios http1-1kb-1000rps,h2c-1kb-1000rps,tcp-echo-1kb-1000rps
done

echo "== 3. proxy/symbol-order.txt"
python3 bench/symbol-order/order.py "$work/mesh-proxy.map" proxy/symbol-order.txt \
  "start-up and health probe=$work/startup.out" \
  "first request (mTLS off)=$work/mesh-proxy/cg.*.out.1" \
  "first request (mTLS on)=$work/mesh-proxy-mtls/cg.*.out.1" \
  "under load (mTLS off)=$work/mesh-proxy/cg.*.out*" \
  "under load (mTLS on)=$work/mesh-proxy-mtls/cg.*.out*"
rm -rf "$work"
echo "generate.sh: wrote proxy/symbol-order.txt; now cargo build --release -p mesh-proxy"
