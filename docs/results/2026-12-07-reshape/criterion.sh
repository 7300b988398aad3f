#!/usr/bin/env bash
# Issue 12: the criterion coordinator benches of the main before the reshape (abd2553) and of the
# reshape (42368e8), in worktrees sharing one target directory, interleaved, REPS rounds.
set -u
OUT=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/tgt-reshape}
for rep in ${REPS:-1 2}; do
  for who in a b; do
    dir=/work/wt-$who
    echo "=== $(date -u +%T) $who-$rep ($(git -C $dir rev-parse --short HEAD))" | tee -a $OUT/runs.log
    (cd $dir && cargo bench -p shoal-benches --bench coordinator -- --warm-up-time 1 --measurement-time 3 --noplot) \
      > $OUT/coordinator-$who-$rep.txt 2>&1
    echo "=== $(date -u +%T) $who-$rep exit $?" | tee -a $OUT/runs.log
  done
done
