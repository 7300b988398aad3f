#!/usr/bin/env bash
# Per-operation costs of W1 phase A (closed loop, 32 in flight) and phase B (open loop at half
# of A's rate) on one persistent 3-node `shoal dev` cluster: node CPU, context switches,
# syscalls, UDP datagrams, commits and fsync'd writes, from perf stat, /proc/net/snmp and the
# nodes' own metrics. Usage: profile.sh SHOAL_BINARY OUTDIR [B_RATE]
set -u
BIN=$1; OUT=$2; RATE=${3:-2300}
mkdir -p $OUT; D=$(mktemp -d /tmp/prof-dev.XXXX)
$BIN dev --dir $D > $OUT/dev.log 2>&1 &
DEV=$!
while [ ! -f $D/env ]; do sleep 1; done
. $D/env
PIDS=$(awk '$2 ~ /^[0-9]+$/ {print $2}' $D/pids | paste -sd,)
METRICS=$(awk '/^n[0-9]/ {print $3}' $D/nodes | tr "\n" " ")
echo "pids $PIDS metrics $METRICS" > $OUT/setup.txt
cat $D/nodes >> $OUT/setup.txt
$BIN bench --ops 1 --warmup 0s --quiet > $OUT/preload.txt 2>&1
scrape() { for m in $METRICS; do curl -s http://$m/metrics; done | grep -E '^shoal_(storage_commits_total|storage_writes_total|requests_total|transport_requests_sent_total|transport_requests_received_total) ' | awk '{s[$1]+=$2} END {for (k in s) print k, s[k]}' | sort; }
udp() { awk '/^Udp:/ {n++; if (n==2) print "udp_in", $2, "udp_out", $5}' /proc/net/snmp; }
run() { # name args...
  local name=$1; shift
  scrape > $OUT/$name.metrics.before; udp > $OUT/$name.udp.before
  perf stat -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter -p $PIDS -o $OUT/$name.perfstat &
  local P=$!
  $BIN bench --no-preload "$@" --quiet --json $OUT/$name.json > $OUT/$name.txt 2>&1
  kill -INT $P; wait $P
  scrape > $OUT/$name.metrics.after; udp > $OUT/$name.udp.after
}
run a --concurrency 32 --duration 30s
run b --rate $RATE --max-in-flight 64 --duration 30s
if [ "${PROFILE:-0}" = 1 ]; then
  perf record -F 499 -g -p $PIDS -o $OUT/b.perf.data -- sleep 30 > /dev/null 2>&1 &
  R=$!
  $BIN bench --no-preload --rate $RATE --max-in-flight 64 --duration 30s --quiet > $OUT/b-profiled.txt 2>&1
  wait $R
fi
kill -INT $DEV; wait $DEV
rm -rf $D
