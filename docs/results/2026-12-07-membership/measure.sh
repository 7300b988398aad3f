#!/usr/bin/env bash
# Membership in the node (issue 13) and the reshape fix (issue 12): W1 phase A of the main
# before this session (38af918) and of this main, interleaved, 3 runs each, with the
# local-first session's script. BASE: `git worktree add --detach /work/wt-head 38af918`, then
# there `CARGO_TARGET_DIR=/tmp/tgt-head cargo build --release -p shoal-cli`.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE BASE=${BASE:-/tmp/tgt-head/release/shoal} exec "$HERE/../2026-12-07-local-first/measure.sh"
