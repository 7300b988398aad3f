#!/usr/bin/env bash
# Start-up with 1,000,000 keys (issue 15): open → first read, and until the trees are ready,
# before (the open scanned every record before returning) and after (trees built beside
# serving), each after a clean stop and after an unclean one (redb repairs the file first).
# Storage-level: the #[ignore]d test startup_time_with_many_keys in shoal-storage, on a redb
# file loaded once through the storage API (100-byte values). "Before" is reproduced in the
# same build: the open with its background build held, then the unpaced full scan that the
# old open ran (the same code path, Trees::build_now), then the first read.
# DIR: where the database goes (default /tmp/startup-1m; about 270 MiB). REPS: runs of each.
set -u
OUT=${OUT:-$(cd "$(dirname "$0")" && pwd)}
DIR=${DIR:-/tmp/startup-1m}
KEYS=${KEYS:-1000000}
REPS=${REPS:-1 2 3}
cd "$(dirname "$0")/../../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
bin=$(cargo test -p shoal-storage --release --lib startup_time --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
run() { SHOAL_STARTUP_DIR=$DIR SHOAL_STARTUP_KEYS=$KEYS "$@" "$bin" startup_time --ignored --nocapture 2>&1 \
  | grep -E "^(loaded|before:|[0-9]+ keys|open )" | tee -a "$OUT/runs.log"; }
mkdir -p "$DIR"
echo "=== $(date -u +%FT%TZ) $(git rev-parse --short HEAD) keys=$KEYS" | tee -a "$OUT/runs.log"
for rep in $REPS; do
  echo "--- rep $rep clean" | tee -a "$OUT/runs.log"
  run env SHOAL_STARTUP_BEFORE=1
  run env
  echo "--- rep $rep unclean" | tee -a "$OUT/runs.log"
  run env SHOAL_STARTUP_LEAVE_DIRTY=1
  run env SHOAL_STARTUP_BEFORE=1
  run env SHOAL_STARTUP_LEAVE_DIRTY=1
  run env
done
