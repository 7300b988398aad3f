#!/usr/bin/env bash
# Local first (issue 11, item 3): W1 phase A of the main before it (5cd05d0, built in a
# worktree) and of this main, interleaved, REPS runs each (default 3); PREFIX names the files,
# OUT the directory they go to (default: this script's).
set -u
OUT=${OUT:-$(cd "$(dirname "$0")" && pwd)}
BASE=${BASE:-/work/wt-base/target/release/shoal}
NEW=${NEW:-/work/main/target/release/shoal}
for rep in ${REPS:-1 2 3}; do
  for who in base new; do
    bin=$BASE; [ $who = new ] && bin=$NEW
    name=${PREFIX:-w1a}-$who-$rep
    echo "=== $(date -u +%T) $name: $bin bench --dev 3 --workload w1 --phases a" | tee -a $OUT/runs.log
    $bin bench --dev 3 --workload w1 --phases a --quiet --json $OUT/$name.json > $OUT/$name.txt 2>&1
    echo "=== $(date -u +%T) $name exit $?" | tee -a $OUT/runs.log
  done
done
