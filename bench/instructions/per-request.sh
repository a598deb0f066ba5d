#!/usr/bin/env bash
# Instructions per proxied request of each sidecar, counted by callgrind: the
# profiling build of mesh-proxy (the release build with its symbols) runs as
# both sidecars of `mesh-bench --quick` (headline scenario), and each sidecar's
# steady-state dumps are divided by the requests they hold (calls to
# `Record::finish`, one per request). glibc's memset is left out: callgrind
# counts each byte of a `rep stosb` as an instruction, and that is the 4 KiB
# clear of each read slice, a few dozen cycles on the CPU.
#
# Unlike the CPU seconds of an interleaved run (±10 % between repetitions),
# the count repeats to about 1 %, so a cut of a few percent shows. Root
# (network namespaces), valgrind; about 3 minutes per variant after the build.
#
#   bench/instructions/per-request.sh [mesh-proxy] [mesh-proxy-mtls]
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lib/sidecar-under-callgrind.sh
[ "$(id -u)" = 0 ] || { echo "per-request.sh: run as root (network namespaces)" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "per-request.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(mesh-proxy mesh-proxy-mtls)

echo "== builds: the profiling sidecar alone, then the bench's other binaries"
cargo build --profile profiling -p mesh-proxy --bin mesh-proxy
cargo build --release --bins -p mesh-bench -p mesh-cni -p mesh-agent
rel=$PWD/target/release
sidecar=$PWD/target/profiling/mesh-proxy

work=$(mktemp -d /tmp/per-request.XXXXXX)
chmod 777 "$work" # the bench's sidecars run as UID 1337
bench_dir "$rel" "$work"

# Prints "<instructions per request> <requests>" for one callgrind dump.
per_request() {
  local total memset requests
  total=$(callgrind_annotate --threshold=100 "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  memset=$(callgrind_annotate --threshold=100 --inclusive=yes "$1" 2>/dev/null |
    awk '/__memset_avx2|__memset_evex|__memset_sse2/ {gsub(",", "", $1); s += $1} END {print s + 0}')
  # The calls into `Record::finish`: the caller lines ("<", with a count)
  # of the block whose own line ("*") is that function. Lines naming it as a
  # caller elsewhere count its calls to other functions. awk reads to the
  # end: leaving early would kill callgrind_annotate with SIGPIPE, which
  # pipefail turns into a silent exit of the whole script.
  requests=$(callgrind_annotate --threshold=100 --tree=caller "$1" 2>/dev/null |
    awk '/^$/ { n = 0; next }
         /^ *[0-9,]+ .*< / { c = $0; sub(/.*\(/, "", c); sub(/x\).*/, "", c); gsub(",", "", c); n += c; next }
         /\*  \?\?\?:mesh_proxy::record::Record::finish / && !found { found = n }
         END { print found }')
  [ -n "$requests" ] && [ "$requests" -gt 0 ] || { echo "- 0"; return; }
  echo "$(((total - memset) / requests)) $requests"
}

for v in "${variants[@]}"; do
  out=$work/$v
  sidecar_wrapper "$work" "$sidecar" "$out" valgrind --tool=callgrind --dump-every-bb=20000000
  echo "== $v under callgrind (slow: the bench's requests queue behind it)"
  "$work/bin/mesh-bench" --quick --variants "$v" --scenarios http1-1kb-1000rps \
    --out "$out/results" > "$out/bench.log" 2>&1 || { tail -20 "$out/bench.log" >&2; exit 1; }
  for log in "$out"/vg.*.log; do
    pid=${log##*/vg.}
    pid=${pid%.log}
    side=server
    grep -q -- "--pod bench-client" "$log" && side=client
    # Dumps 3 to 6: past start-up and the first requests, before the end.
    for d in 3 4 5 6; do
      f=$out/cg.$pid.out.$d
      [ -s "$f" ] || continue
      read -r ir n < <(per_request "$f")
      echo "$v $side dump $d: $ir instructions per request ($n requests)"
    done
  done
done
rm -rf "$work"
