#!/usr/bin/env bash
# Hinted handoff (issue 14): the figures of docs/hints.md, in one session.
#  1. W1 phase A of the main before issue 14 (b9f5cf1, built in a worktree: BASE) and of this
#     main (NEW), interleaved, REPS runs each, through the local-first script.
#  2. W1-5 phase C: five --dev nodes, n4 and n5 SIGKILLed 10 s in and started again at 20 s.
#  3. (with RATE) A 5-minute outage of n4 and n5 under an open loop at half of W1-5 phase A's rate (RATE),
#     started again 320 s in; 60 s measured after the restart.
# OUT is where the files go (default: this script's directory).
set -u
OUT=${OUT:-$(cd "$(dirname "$0")" && pwd)}
BASE=${BASE:-/work/wt-base/target/release/shoal}
NEW=${NEW:-/work/main/target/release/shoal}
here=$(cd "$(dirname "$0")" && pwd)
log() { echo "=== $(date -u +%T) $*" | tee -a "$OUT/runs.log"; }

if [ -z "${SKIP_W1A:-}" ]; then
  OUT=$OUT BASE=$BASE NEW=$NEW REPS=${REPS:-1 2 3} PREFIX=w1a \
    bash "$here/../2026-12-07-local-first/measure.sh"
fi
for rep in ${C_REPS-1 2}; do
  log "w1-5-c-$rep"
  $NEW bench --dev 5 --workload w1 --phases a,c --kill-node 4,5 --restart-at 20s --quiet \
    --json "$OUT/w1-5-c-$rep.json" > "$OUT/w1-5-c-$rep.txt" 2>&1
  log "w1-5-c-$rep exit $?"
done
if [ -n "${RATE:-}" ]; then
  log "outage-5min at $RATE ops/s"
  $NEW bench --dev 5 --rate "$RATE" --max-in-flight 20000 --duration 380s --kill-node 4,5 \
    --kill-at 20s --restart-at 320s --quiet --json "$OUT/outage-5min.json" \
    > "$OUT/outage-5min.txt" 2>&1
  log "outage-5min exit $?"
fi
