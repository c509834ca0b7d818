#!/usr/bin/env bash
# bench_scale.py at two commits, both run at once on this machine, so that both see the same load: the way to
# compare the driver's CPU per result (or any of its figures) of one commit with another's.
#
#     bash benchmarks/compare_scale.sh OLD [NEW] [TRIALS]      # NEW defaults to HEAD, TRIALS to 1000
#
# Each commit is checked out into its own git worktree under $OUT (default /tmp/p2m-compare-scale) and run with
# this checkout's .venv, its worktree first on PYTHONPATH (the driver's and, by inheritance, Ray's workers').
# Before 1982fb8 the script put its experiment inside its data root (--out), which launch's pre-flight checks: for
# such a commit --out is a link to a synthetic dataset. Output: $OUT/old.txt and $OUT/new.txt, each headed by its
# commit.
set -euo pipefail
old=${1:?usage: compare_scale.sh OLD [NEW] [TRIALS]}
new=${2:-HEAD}
trials=${3:-1000}
out=${OUT:-/tmp/p2m-compare-scale}
repo=$(git rev-parse --show-toplevel)
py=$repo/.venv/bin/python

rm -rf "$out"
mkdir -p "$out"
git -C "$repo" worktree prune
pids=()
for side in old new; do
    rev=$(git -C "$repo" rev-parse "${!side}")
    src=$out/src-$side
    git -C "$repo" worktree add --quiet --detach "$src" "$rev"
    args=(--trials "$trials" --out "$out/run-$side")
    if ! grep -q -- '-data' "$src/benchmarks/bench_scale.py"; then  # the old layout: experiment inside --out
        (cd "$src" && PYTHONPATH=$src "$py" -m p2m.cli data synth --out "$out/data-$side" \
            --models-per-category 4 --views 4 --seed 3 >/dev/null)
        ln -s "$out/data-$side" "$out/run-$side"
    fi
    {
        echo "commit $rev ($(git -C "$repo" log -1 --format=%s "$rev" | cut -c1-80))"
        echo "started $(date -u +%FT%TZ)"
        (cd "$src" && PYTHONPATH=$src "$py" -c 'import p2m, search; print("code from", p2m.__file__)')
    } >"$out/$side.txt"
    (rc=0
     cd "$src" && PYTHONPATH=$src "$py" benchmarks/bench_scale.py "${args[@]}" >>"$out/$side.txt" 2>"$out/$side.err" \
         || rc=$?
     echo "ended $(date -u +%FT%TZ), exit $rc" >>"$out/$side.txt"
     exit $rc) &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for side in old new; do git -C "$repo" worktree remove --force "$out/src-$side"; done
cat "$out/old.txt" "$out/new.txt"
exit $status
