#!/usr/bin/env python3
"""Shrinks fuzz/corpus/<target>/ to at most CAP files that keep the most coverage.

libFuzzer's merge (`cargo fuzz cmin`) keeps every input that adds any feature, which for
Shoal's decoders is thousands of inputs (each error branch of each message field is its own
edge). This keeps a committed corpus small: it asks the target binary for each input's features
(`-set_cover_merge=1 -merge_control_file=...`), keeps every `seed-*` and `regression-*` file,
then greedily adds the input that covers the most features not yet covered, up to CAP files.

Usage (from fuzz/, after `cargo fuzz build --sanitizer none`):
    python3 reduce_corpus.py TARGET [CAP] [TARGET_DIR]
"""
import os
import shutil
import subprocess
import sys
import tempfile

target = sys.argv[1]
cap = int(sys.argv[2]) if len(sys.argv) > 2 else 300
target_dir = sys.argv[3] if len(sys.argv) > 3 else "target"
binary = os.path.join(target_dir, "x86_64-unknown-linux-gnu", "release", target)
corpus = os.path.join("corpus", target)

with tempfile.TemporaryDirectory() as scratch:
    control = os.path.join(scratch, "control")
    out = os.path.join(scratch, "out")
    os.mkdir(out)
    subprocess.run(
        [binary, "-set_cover_merge=1", f"-merge_control_file={control}", out, corpus],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    lines = open(control).read().split("\n")

n = int(lines[0])
files = lines[2 : 2 + n]
features = {}
for line in lines[2 + n :]:
    parts = line.split()
    if parts and parts[0] == "FT":
        features[int(parts[1])] = set(map(int, parts[2:]))
everything = set().union(*features.values()) if features else set()

keep = {i for i, f in enumerate(files) if os.path.basename(f).startswith(("seed-", "regression-"))}
covered = set().union(*(features.get(i, set()) for i in keep)) if keep else set()
candidates = {i: f for i, f in features.items() if i not in keep}
while len(keep) < cap and candidates:
    best = max(candidates, key=lambda i: (len(candidates[i] - covered), -os.path.getsize(files[i])))
    if not candidates[best] - covered:
        break
    covered |= candidates.pop(best)
    keep.add(best)

kept_names = {os.path.basename(files[i]) for i in keep}
removed = 0
for name in os.listdir(corpus):
    if name not in kept_names:
        os.remove(os.path.join(corpus, name))
        removed += 1
share = len(covered) / len(everything) if everything else 1.0
print(f"{target}: kept {len(keep)} of {n} inputs, {len(covered)} of {len(everything)} features ({share:.0%})")
