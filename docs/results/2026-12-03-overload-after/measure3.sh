#!/usr/bin/env bash
# After the issue 11 merges: W1 phase A of the previous main (abd2553 + the new bench) and of
# this main, interleaved, two runs each.
set -u
OUT=/work/main/docs/results/2026-12-03-overload-after
BASE=/work/wt-bench/target/release/shoal
NEW=/work/main/target/release/shoal
for rep in ${REPS:-1 2}; do
  for who in base new; do
    bin=$BASE; [ $who = new ] && bin=$NEW
    name=w1a-after11-$who-$rep
    echo "=== $(date -u +%T) $name: $bin bench --dev 3 --workload w1 --phases a" | tee -a $OUT/runs.log
    $bin bench --dev 3 --workload w1 --phases a --quiet --json $OUT/$name.json > $OUT/$name.txt 2>&1
    echo "=== $(date -u +%T) $name exit $?" | tee -a $OUT/runs.log
  done
done
