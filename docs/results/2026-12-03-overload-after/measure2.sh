#!/usr/bin/env bash
# Second round, same session: interleaved previous main (old server + new bench, branch bench-overload)
# and this main. 75 % of phase A with 1 s attempts x 3; the overload step workload; W1 A+B again.
set -u
OUT=/work/main/docs/results/2026-12-03-overload-after
BASE=/work/wt-bench/target/release/shoal
NEW=/work/main/target/release/shoal
run() { # name binary args...
  local name=$1 bin=$2; shift 2
  echo "=== $(date -u +%T) $name: $bin bench --dev 3 $*" | tee -a $OUT/runs.log
  $bin bench --dev 3 "$@" --quiet --json $OUT/$name.json > $OUT/$name.txt 2>&1
  echo "=== $(date -u +%T) $name exit $?" | tee -a $OUT/runs.log
}
for rep in 1 2; do
  for who in base new; do
    bin=$BASE; [ $who = new ] && bin=$NEW
    run b75-$who-$rep $bin --workload w1 --phases b --rate 3500 --attempt-timeout 1s --attempts 3 --max-in-flight 20000
    run overload-$who-$rep $bin --workload overload --attempt-timeout 1s --attempts 3
    run w1ab-$who-$((rep+2)) $bin --workload w1 --phases a,b
  done
done
touch $OUT/DONE
