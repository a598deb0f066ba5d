#!/bin/bash
# Record of the 2026-12-07 runs (see README.md). From the repository root, as root:
#   bash bench/figures/sched-2026-12-07/policy-ab.sh mesh-proxy OUT 0|1
# 1 moves both sidecars to SCHED_BATCH (chrt) before the load; 0 leaves them alone.
# usage: sys.sh variant outdir batch(0/1)
v=$1; o=$2; b=$3; mkdir -p $o
target/release/mesh-bench --quick --variants $v --scenarios ${SC:-http1-1kb-1000rps} --out $o/res > $o/log 2>&1 &
for i in $(seq 200); do grep -q "idle RSS" $o/log && break; sleep 0.1; done
p=$(pgrep -x ${PROC:-mesh-proxy})
if [ "$b" = 1 ]; then for pid in $p; do for t in /proc/$pid/task/*; do chrt -b -p 0 $(basename $t); done; done; fi
sleep 2
a=$(head -1 /proc/stat); cs1=0; for pid in $p; do for t in /proc/$pid/task/*; do cs1=$((cs1 + $(grep -h ctxt $t/status | awk '{s+=$2} END {print s}'))); done; done
sleep 4
z=$(head -1 /proc/stat); cs2=0; for pid in $p; do for t in /proc/$pid/task/*; do cs2=$((cs2 + $(grep -h ctxt $t/status | awk '{s+=$2} END {print s}'))); done; done
echo "$a" "$z" | awk -v cs=$((cs2-cs1)) '{busy1=$2+$3+$4+$7+$8; busy2=$13+$14+$15+$18+$19; printf "system busy jiffies in 4s: %d (user %d sys %d softirq %d); sidecar ctx switches %d\n", busy2-busy1, ($13+$14)-($2+$3), $15-$4, $19-$8, cs}'
wait
grep "^\[" $o/log | sed 's/.*rps /rps /'
