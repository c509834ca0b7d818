"""How many seeds make the paired interval of ``results.analysis.paired`` trustworthy? Its coverage on synthetic paired
data with a known effect, by seeds (K) and test models (J).

    python benchmarks/bench_paired_coverage.py [--reps 400]

The data mimic retrained arms on one test set: each test model has a difficulty both arms share (the
pairing), each seed of each arm a multiplicative offset (sd 5%), each view noise (sd 10%); the best arm's
CDs are 5% lower in expectation. An interval covers when it contains -5%.
"""
from __future__ import annotations

import argparse

import numpy as np

from results.analysis.paired import CONFIDENCE, paired_change

EFFECT = -0.05


def coverage(K: int, J: int, reps: int, n_boot: int, seed: int = 1) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    hits, widths = 0, []
    for rep in range(reps):
        difficulty = rng.lognormal(0, 0.3, size=J)
        base = difficulty * rng.lognormal(0, 0.05, size=(K, 1)) * rng.lognormal(0, 0.1, size=(K, J))
        best = (1 + EFFECT) * difficulty * rng.lognormal(0, 0.05, size=(K, 1)) * rng.lognormal(0, 0.1, size=(K, J))
        _, low, high = paired_change(best, base, relative=True, n_boot=n_boot, seed=rep)
        hits += low <= EFFECT <= high
        widths.append(high - low)
    return hits / reps, float(np.mean(widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--boot", type=int, default=1000)
    args = parser.parse_args()
    print(f"nominal {CONFIDENCE:.0%} intervals, true change {EFFECT:+.0%}, {args.reps} simulated comparisons each")
    print(f"{'seeds':>5} {'models':>6} {'coverage':>9} {'mean width':>11}")
    for J in (10, 30):
        for K in (2, 3, 5, 8):
            cov, width = coverage(K, J, args.reps, args.boot)
            print(f"{K:>5} {J:>6} {cov:>9.1%} {width:>10.1%}")


if __name__ == "__main__":
    main()
