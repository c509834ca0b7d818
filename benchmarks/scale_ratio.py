"""The driver's CPU per result of two sides of ``compare_scale.sh``, each run several times, as a ratio with its
95% interval: the way to say whether one commit's driver is no worse than another's.

    python benchmarks/scale_ratio.py BASE NEW DIR [DIR ...] [--at-most 1.10]

Each ``DIR`` is an output folder of ``compare_scale.sh`` (one per wave of runs); the runs of a side are the labels
that are the side's name and a number (``before1``, ``before2``, ... for ``before``), unique across the folders.
Each run's ``driver CPU per result (ms)`` line is read (the figure every version of ``bench_scale.py`` prints). The
ratio is NEW's geometric mean over BASE's, and its interval a Welch t interval on the logarithms of the runs'
figures: the spread between runs, which the load of the machine and the order in which Ray delivers results set, not
the spread within one run. With ``--at-most R``, the verdict: *no worse* when the interval's upper end is at most
``R``, *worse* when its lower end is above ``R``, else *not shown*. Exit 2 when a side has fewer than two runs or a
run printed no figure.
"""
from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from pathlib import Path

from scipy import stats

FIGURE = re.compile(r"^\s*driver CPU per result \(ms\)\s+([0-9.]+)", re.MULTILINE)


def runs(folders: list[Path], side: str) -> dict[str, float]:
    """Each run of ``side`` in ``folders``: its label and its driver CPU per result (ms)."""
    found = {}
    for path in sorted(path for folder in folders for path in folder.glob(f"{side}*.txt")):
        if not re.fullmatch(rf"{re.escape(side)}\d+", path.stem):
            continue
        if path.stem in found:
            raise ValueError(f"{path}: run {path.stem} is in two folders")
        match = FIGURE.search(path.read_text())
        if match is None:
            raise ValueError(f"{path}: no 'driver CPU per result (ms)' line (did the run fail?)")
        found[path.stem] = float(match.group(1))
    if len(found) < 2:
        raise ValueError(f"{', '.join(map(str, folders))}: side {side!r} has {len(found)} run(s) ({side}1.txt, "
                         f"{side}2.txt, ...); an interval needs at least 2")
    return found


def log_ratio_interval(base: list[float], new: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """The ratio of ``new``'s geometric mean to ``base``'s, and a Welch t interval of it (on the logarithms)."""
    a, b = [math.log(x) for x in base], [math.log(x) for x in new]
    diff = statistics.fmean(b) - statistics.fmean(a)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return math.exp(diff), math.exp(diff), math.exp(diff)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return math.exp(diff), math.exp(diff - half), math.exp(diff + half)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--at-most", type=float, default=None, help="the ratio NEW/BASE that counts as no worse")
    args = parser.parse_args()
    try:
        sides = {side: runs(args.folders, side) for side in (args.base, args.new)}
    except ValueError as error:
        print(f"scale_ratio.py: {error}", file=sys.stderr)
        return 2
    for side, figures in sides.items():
        listed = ", ".join(f"{label} {value:.3f}" for label, value in figures.items())
        print(f"{side}: {len(figures)} runs, driver CPU per result (ms): {listed}; "
              f"geometric mean {math.exp(statistics.fmean(math.log(v) for v in figures.values())):.3f}")
    ratio, low, high = log_ratio_interval(list(sides[args.base].values()), list(sides[args.new].values()))
    print(f"ratio {args.new}/{args.base}: {ratio:.3f}, 95% interval {low:.3f} to {high:.3f} "
          f"(Welch t on the logarithms of the runs' figures)")
    if args.at_most is not None:
        verdict = "no worse" if high <= args.at_most else "worse" if low > args.at_most else "not shown"
        print(f"verdict against at most {args.at_most:.2f}: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
