#!/usr/bin/env bash
# Issue 15's p99 goal (foreground p99 with anti-entropy running at most 1.2x the p99 without
# it), and the brief's W1 phase A rule, in one session:
#  1. W1 phase A of the main before this session (c67cd79, built in a worktree: BASE) and of
#     this main (NEW), interleaved, REPS runs each, through the local-first script.
#  2. Anti-entropy repairing under load: three --dev nodes at RATE ops/s (open loop), n3
#     SIGKILLed 10 s in and started again at 20 s, 60 s measured. With three nodes and N=3 no
#     fallback exists (no hints); what n3 missed comes back through read repair and, with
#     anti-entropy on, through exchanges from 10 s after its restart. Interleaved, AE on and
#     --node-arg=--no-anti-entropy, AE_REPS runs each; compare the p99 of the window after
#     the restart.
set -u
OUT=${OUT:-$(cd "$(dirname "$0")" && pwd)}
BASE=${BASE:-/work/wt-a/target/release/shoal}
NEW=${NEW:-/work/main/target/release/shoal}
RATE=${RATE:-2000}
here=$(cd "$(dirname "$0")" && pwd)
log() { echo "=== $(date -u +%T) $*" | tee -a "$OUT/runs.log"; }

if [ -z "${SKIP_W1A:-}" ]; then
  OUT=$OUT BASE=$BASE NEW=$NEW REPS=${REPS:-1 2 3} PREFIX=w1a \
    bash "$here/../2026-12-07-local-first/measure.sh"
fi
for rep in ${AE_REPS-1 2}; do
  for ae in on off; do
    extra=(); [ $ae = off ] && extra=(--node-arg=--no-anti-entropy)
    name=ae-$ae-$rep
    log "$name at $RATE ops/s"
    $NEW bench --dev 3 --rate "$RATE" --max-in-flight 20000 --duration 60s --kill-at 10s \
      --restart-at 20s "${extra[@]}" --quiet --json "$OUT/$name.json" > "$OUT/$name.txt" 2>&1
    log "$name exit $?"
  done
done
