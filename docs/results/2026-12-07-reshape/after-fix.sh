#!/usr/bin/env bash
# Issue 12, after the fix: the criterion coordinator bench of abd2553 (the main before the
# reshape), 38af918 (main before the fix) and the fix, interleaved, ROUNDS rounds.
#
# Each revision builds in its OWN target directory: worktrees of one workspace with the same
# Cargo.lock give the bench binary the same file name, and a shared target directory then
# serves one revision's binary for another (cargo finds it fresh), so both "sides" measure the
# same code. The binaries are copied out and run directly.
set -eu
OUT=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-/tmp/bench-bin}
mkdir -p "$BIN" /tmp/benchrun
for pair in a:abd2553 head:38af918 fix:${FIX:-HEAD}; do
  name=${pair%%:*}; rev=${pair#*:}
  dir=/work/wt-$name
  [ -d "$dir" ] || git -C "$OUT" worktree add --detach "$dir" "$rev"
  (cd "$dir" && CARGO_TARGET_DIR=/tmp/tgt-$name cargo bench -p shoal-benches --bench coordinator --no-run)
  cp "$(ls -t /tmp/tgt-$name/release/deps/coordinator-* | grep -v '\.d$' | head -1)" "$BIN/$name"
done
md5sum "$BIN"/a "$BIN"/head "$BIN"/fix
cd /tmp/benchrun
for r in $(seq 1 "${ROUNDS:-3}"); do
  for name in a head fix; do
    echo "== $name $r"
    "$BIN/$name" --bench --warm-up-time 1 --measurement-time 3 --noplot 2>&1 | grep -E "time:"
  done
done | tee "$OUT/after-fix-rounds.txt"
