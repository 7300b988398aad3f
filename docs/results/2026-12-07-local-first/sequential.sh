#!/usr/bin/env bash
# Sequential puts (one at a time through the client crate), the main before local first and
# this main, interleaved, REPS pairs (default 2).
set -u
OUT=$(cd "$(dirname "$0")" && pwd)
BASE=${BASE:-/work/wt-base/target/release/shoal}
NEW=${NEW:-/work/main/target/release/shoal}
for rep in ${REPS:-1 2}; do
  for who in base new; do
    bin=$BASE; [ $who = new ] && bin=$NEW
    name=seqput-$who-$rep
    echo "=== $(date -u +%T) $name" | tee -a $OUT/runs.log
    $bin bench --dev 3 --keys 10000 --concurrency 1 --ops 10000 --read-ratio 0 --quiet \
      --json $OUT/$name.json > $OUT/$name.txt 2>&1
    echo "=== $(date -u +%T) $name exit $?" | tee -a $OUT/runs.log
  done
done
