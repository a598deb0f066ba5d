#!/bin/bash
# Record of the 2026-12-07 runs (see README.md): mean run-queue wait per time
# slice of both sidecars. Usage as policy-ab.sh.
v=$1; o=$2; b=$3; mkdir -p $o
target/release/mesh-bench --quick --variants $v --scenarios ${SC:-http1-1kb-1000rps} --out $o/res > $o/log 2>&1 &
for i in $(seq 200); do grep -q "idle RSS" $o/log && break; sleep 0.1; done
p=$(pgrep -x mesh-proxy)
if [ "$b" = 1 ]; then for pid in $p; do chrt -b -p 0 $pid; done; fi
sleep 2
for pid in $p; do cat /proc/$pid/schedstat; done > $o/a; sleep 4; for pid in $p; do cat /proc/$pid/schedstat; done > $o/b
paste $o/a $o/b | awk '{printf "run %.1f ms wait %.1f ms slices %d  mean wait %.1f us\n", ($4-$1)/1e6, ($5-$2)/1e6, $6-$3, ($5-$2)/($6-$3)/1e3}'
wait; grep "^\[" $o/log | sed 's/.*rps /rps /'
