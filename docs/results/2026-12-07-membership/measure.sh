#!/usr/bin/env bash
# Membership in the node (issue 13) and the reshape fix (issue 12): W1 phase A of the main
# before this session (38af918) and of this main, interleaved, REPS runs each (default 3);
# PREFIX names the files. BASE: `git worktree add --detach /work/wt-head 38af918`, then there
# `CARGO_TARGET_DIR=/tmp/tgt-head cargo build --release -p shoal-cli`.
set -u
OUT=$(cd "$(dirname "$0")" && pwd)
BASE=${BASE:-/tmp/tgt-head/release/shoal}
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
