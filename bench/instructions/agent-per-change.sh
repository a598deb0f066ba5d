#!/usr/bin/env bash
# Instructions the agent spends per EndpointSlice change, counted by
# callgrind: the scale benchmark's change series (5,000 proxies, 10,000
# services, one change at a time) against the profiling build of mesh-agent
# under `valgrind --tool=callgrind --instr-atstart=no`. Instrumentation is
# switched on once the proxies are connected and have made their lookups, the
# counters are dumped when the series starts and again when its last change
# has reached its proxies; the second dump divided by the number of changes is
# the figure. Unlike the agent's CPU seconds per change (±20 % between runs of
# one build on this VM), the count repeats closely, so small cuts show.
#
# Needs valgrind; about 10 minutes after the build (the agent starts and
# answers 15,000 lookups under valgrind before the series).
#
#   bench/instructions/agent-per-change.sh [kubernetes|files] [changes]
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v valgrind >/dev/null || { echo "agent-per-change.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
source=${1:-kubernetes}
changes=${2:-150}

echo "== build: the profiling agent and the scale benchmark"
cargo build --profile profiling -p mesh-agent --bin mesh-agent --example scale

# The benchmark starts the `mesh-agent` beside its own directory: put a
# wrapper there that runs the real one under callgrind.
work=$(mktemp -d /tmp/agent-per-change.XXXXXX)
mkdir -p "$work/profiling/examples"
cp target/profiling/examples/scale "$work/profiling/examples/scale"
cat > "$work/profiling/mesh-agent" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$work/cg.%p.out \
  --log-file=$work/vg.%p.log $PWD/target/profiling/mesh-agent "\$@"
EOF
chmod +x "$work/profiling/mesh-agent"

log=$work/scale.log
echo "== scale benchmark, $source source, $changes changes (log: $log)"
"$work/profiling/examples/scale" --source "$source" --no-sidecar --rollout-services 0 \
  --changes "$changes" > "$log" 2>&1 &
bench=$!
trap 'kill $bench 2>/dev/null || true; pkill -f "$work/cg" 2>/dev/null || true' EXIT

# Waits for a line of the benchmark's log matching $1 (or its end).
wait_for() {
  until grep -q -- "$1" "$log"; do
    kill -0 $bench 2>/dev/null || { tail -20 "$log" >&2; echo "agent-per-change.sh: benchmark ended before '$1'" >&2; exit 1; }
    sleep 0.2
  done
}
agent_pid() { pgrep -f -n "callgrind-out-file=$work/cg" ; }

wait_for "agent after lookups"
pid=$(agent_pid)
echo "   proxies connected and lookups answered; instrumentation on (agent pid $pid)"
callgrind_control -i on "$pid" > /dev/null
wait_for "EndpointSlice changes, one at a time"
callgrind_control -d "series-start" "$pid" > /dev/null
echo "   series started; counters dumped and zeroed"
wait_for "change *$changes/$changes:"
callgrind_control -d "series-end" "$pid" > /dev/null
echo "   last change applied; counters dumped"
grep -E "^\[3\]|change +($changes)/" "$log" | head -3
kill $bench 2>/dev/null || true
wait $bench 2>/dev/null || true

dump=$(ls "$work"/cg.*.out.2 2>/dev/null | head -1)
[ -s "$dump" ] || { echo "agent-per-change.sh: no second dump in $work" >&2; exit 1; }
total=$(callgrind_annotate --threshold=100 "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "agent: $total instructions over $changes changes: $((total / changes)) per change"
echo "dumps kept in $work (callgrind_annotate $dump)"
