#!/usr/bin/env bash
set -u
BIN=$1; OUT=$2; RATE=${3:-2300}
mkdir -p $OUT; D=$(mktemp -d /tmp/prof-dev.XXXX)
$BIN dev --dir $D > $OUT/dev.log 2>&1 &
DEV=$!
while [ ! -f $D/env ]; do sleep 1; done
. $D/env
P1=$(awk '$2 ~ /^[0-9]+$/ {print $2; exit}' $D/pids)
$BIN bench --keys 20000 --ops 1 --warmup 0s --quiet > $OUT/preload.txt 2>&1
$BIN bench --keys 20000 --no-preload --rate $RATE --max-in-flight 64 --duration 20s --quiet > $OUT/b.txt 2>&1 &
B=$!
sleep 8
perf record -F 300 --call-graph dwarf,16384 -p $P1 -o $OUT/dwarf.data -- sleep 6 > /dev/null 2>&1
wait $B
kill -INT $DEV; wait $DEV
rm -rf $D
