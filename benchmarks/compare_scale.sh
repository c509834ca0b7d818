#!/usr/bin/env bash
# bench_scale.py at several commits (or with several options), all run at once on this machine, so that all see
# the same load: the way to compare the driver's CPU per result (or any of its figures) of one commit with another's.
#
#     bash benchmarks/compare_scale.sh TRIALS LABEL=REV[,ARG...] ...
#     bash benchmarks/compare_scale.sh 1000 before=1982fb8^ after=HEAD,--no-checkpoints after-checkpoints=HEAD
#
# Each side is checked out into its own git worktree under $OUT (default /tmp/p2m-compare-scale) and run with this
# checkout's .venv, its worktree first on PYTHONPATH (the driver's and, by inheritance, Ray's workers'), with
# ARG... added to bench_scale.py's command line. Before 1982fb8 the script put its experiment inside its data root
# (--out), which launch's pre-flight checks: for such a commit --out is a link to a synthetic dataset.
# Output: $OUT/LABEL.txt for each side, headed by its commit and command; all of them printed at the end.
set -euo pipefail
trials=${1:?usage: compare_scale.sh TRIALS LABEL=REV[,ARG...] ...}
shift
[ $# -ge 1 ] || { echo "compare_scale.sh: no side given (LABEL=REV[,ARG...])" >&2; exit 2; }
out=${OUT:-/tmp/p2m-compare-scale}
repo=$(git rev-parse --show-toplevel)
py=$repo/.venv/bin/python

rm -rf "$out"
mkdir -p "$out"
git -C "$repo" worktree prune
labels=() pids=()
for side in "$@"; do
    label=${side%%=*}
    IFS=, read -r -a spec <<<"${side#*=}"
    rev=$(git -C "$repo" rev-parse "${spec[0]}")
    src=$out/src-$label
    git -C "$repo" worktree add --quiet --detach "$src" "$rev"
    args=(--trials "$trials" --out "$out/run-$label" "${spec[@]:1}")
    if ! grep -q -- '-data' "$src/benchmarks/bench_scale.py"; then  # the old layout: experiment inside --out
        (cd "$src" && PYTHONPATH=$src "$py" -m p2m.cli data synth --out "$out/data-$label" \
            --models-per-category 4 --views 4 --seed 3 >/dev/null 2>&1)
        ln -s "$out/data-$label" "$out/run-$label"
    fi
    {
        echo "== $label: commit $rev ($(git -C "$repo" log -1 --format=%s "$rev" | cut -c1-80))"
        echo "command: PYTHONPATH=$src python benchmarks/bench_scale.py ${args[*]}"
        echo "started $(date -u +%FT%TZ)"
        (cd "$src" && PYTHONPATH=$src "$py" -c 'import p2m; print("code from", p2m.__file__)')
    } >"$out/$label.txt"
    (rc=0
     cd "$src" && PYTHONPATH=$src "$py" benchmarks/bench_scale.py "${args[@]}" >>"$out/$label.txt" 2>"$out/$label.err" \
         || rc=$?
     echo "ended $(date -u +%FT%TZ), exit $rc" >>"$out/$label.txt"
     exit $rc) &
    labels+=("$label") pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for label in "${labels[@]}"; do
    git -C "$repo" worktree remove --force "$out/src-$label"
    cat "$out/$label.txt"
done
exit $status
