"""A 1,000-trial search, measured: the real searcher (Optuna TPE behind ``P2MOptunaSearch``), ASHA, the Parquet
sink and ``analyze``, with trials that only report synthetic learning curves (no training), on this machine.

    python benchmarks/bench_scale.py [--trials 1000] [--max-t 50] [--out /tmp/p2m-bench-scale]

Each trial reports ``max_t`` epochs of every validation metric: a curve falling as ``epoch ** -0.7`` towards a
floor set by the distance of the trial's log10 weights from a hidden optimum, with 1% noise per epoch, so TPE
has something to find and ASHA something to stop. The search is ``p2m search launch``'s own code
(``search.run.launch``) with this trainable in place of the training one; 8 trials at a time (0.25 CPU each).

Printed: the driver's CPU milliseconds per result (this process's CPU time, all its threads: Ray's controller,
the searcher, the callback, from the first result to the last, divided by the results between), TPE's seconds per suggestion around the
100th, 500th and 1,000th trial, the driver's peak memory, the results table's file count (the most seen while
the search ran, and at the end), the time of ``resume`` on the finished experiment and of ``analyze``, each
against its goal.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

from _study import cpu_name

GOALS = {"driver": 5.0, "suggest": 0.100, "analyze": 30.0}  # ms per result, s per suggestion at 1000, s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--max-t", type=int, default=50)
    parser.add_argument("--out", default="/tmp/p2m-bench-scale")
    args = parser.parse_args()

    import dataclasses

    from p2m.config import TrainConfig
    from p2m.names import RESULTS_DIR
    from results.report import analyze
    from results.store import list_parts, read_results, read_trials
    from search import callbacks, ray_adapter
    from search.config import load_search_config
    from search.run import launch, resume

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_search_config(_config(args.trials, args.max_t, out), {})
    cfg = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, data=dataclasses.replace(
        TrainConfig().data, root=str(out))))
    exp = out / cfg.name

    suggest_times: list[float] = []
    real_suggest = ray_adapter.P2MOptunaSearch.suggest

    def timed_suggest(self, trial_id):
        t0 = time.perf_counter()
        try:
            return real_suggest(self, trial_id)
        finally:
            suggest_times.append(time.perf_counter() - t0)

    ray_adapter.P2MOptunaSearch.suggest = timed_suggest
    arrivals: list[tuple[float, float]] = []  # (CPU seconds, wall seconds) of this process at each result
    real_result = callbacks.ParquetResults.on_trial_result

    def noted_result(self, *a, **k):
        real_result(self, *a, **k)
        arrivals.append((_cpu(), time.perf_counter()))

    callbacks.ParquetResults.on_trial_result = noted_result
    most_files, stop = [0], threading.Event()

    def count_files():
        while not stop.wait(1.0):
            most_files[0] = max(most_files[0], len(list_parts(exp / RESULTS_DIR)))

    counter = threading.Thread(target=count_files, daemon=True)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; Python {sys.version.split()[0]}, "
          f"{args.trials} trials x up to {args.max_t} epochs, ASHA (grace 1, factor 3), TPE, 8 trials at a time")
    counter.start()
    cpu0, t0 = _cpu(), time.perf_counter()
    launch(cfg, verbose=0, trainable=synthetic_trial)
    cpu, wall = _cpu() - cpu0, time.perf_counter() - t0
    stop.set()
    counter.join()
    rows, trials = read_results(exp), read_trials(exp)
    files_end = len(list_parts(exp / RESULTS_DIR))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t0 = time.perf_counter()
    resume(exp, verbose=0, trainable=synthetic_trial)
    resume_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    analyze([exp], out / "analysis")
    analyze_s = time.perf_counter() - t0

    # steady state, from the first result to the last (Ray's start-up and shutdown are not per result)
    per_result = 1000 * (arrivals[-1][0] - arrivals[0][0]) / (len(arrivals) - 1)
    span = arrivals[-1][1] - arrivals[0][1]
    print(f"search: {len(trials)} trials, {len(rows)} results in {wall:.0f} s of wall time ({span:.0f} s from the "
          f"first result to the last, {len(arrivals) / span:.1f} results/s); driver CPU {cpu:.0f} s in all")
    lines = [("driver CPU per result (ms)", per_result, f"<= {GOALS['driver']:.0f}", per_result <= GOALS["driver"])]
    for n in (100, 500, 1000):
        window = suggest_times[max(0, n - 50):n]
        if len(window) >= 10 and n <= len(suggest_times):
            s = statistics.median(window)
            goal = n == 1000
            lines.append((f"TPE suggestion at ~{n} trials (s, median of {len(window)})", s,
                          f"<= {GOALS['suggest']}" if goal else "", s <= GOALS["suggest"] if goal else None))
    lines += [("driver peak memory (MB)", peak_mb, "", None),
              ("results files, most while running", most_files[0], "", None),
              ("results files at the end", files_end, "", None),
              ("resume of the finished search (s)", resume_s, "", None),
              ("analyze (s)", analyze_s, f"<= {GOALS['analyze']:.0f}", analyze_s <= GOALS["analyze"])]
    width = max(len(name) for name, *_ in lines)
    for name, value, goal, met in lines:
        verdict = "" if met is None else ("met" if met else "NOT met")
        print(f"  {name:<{width}}  {value:>10.3f}  {goal:>8}  {verdict}")


def synthetic_trial(params: dict) -> None:
    """A trial's curves without training: what ``search.trainable.train_trial`` reports, from a formula."""
    import math
    import random

    from ray import tune

    from p2m.names import METRICS, STAGES, val_column

    rng = random.Random(hash(tuple(sorted(params.items()))))
    logs = [math.log10(v) for k, v in sorted(params.items()) if k.startswith("loss.w") and v > 0]
    distance = math.sqrt(sum((x + 0.5) ** 2 for x in logs) / max(len(logs), 1))  # optimum: every weight 10^-0.5
    floor = 0.01 * (1 + distance)
    for epoch in range(1, int(os.environ.get("P2M_BENCH_MAX_T", "50")) + 1):
        cd = floor * (1 + 2 * epoch ** -0.7) * (1 + 0.01 * rng.gauss(0, 1))
        metrics = {}
        for s in STAGES:
            stage_cd = cd * (1 + 0.3 * (3 - s))
            for m in METRICS:
                metrics[val_column(s, m)] = {"cd": stage_cd, "cd_x1000": 1000 * stage_cd, "cd_pred_to_gt": stage_cd / 2,
                                             "cd_gt_to_pred": stage_cd / 2, "f_tau": 100 * math.exp(-50 * stage_cd),
                                             "f_2tau": 100 * math.exp(-25 * stage_cd),
                                             "normal_consistency": 0.9 - stage_cd, "smoothness": 0.1}[m]
        try:
            tune.report({**metrics, "epoch": epoch, "train_loss": 10 * cd, "lr": 1e-4, "epoch_seconds": 0.0})
        except SystemExit:  # Ray stops the trial: park the thread, as search.trainable does
            threading.Event().wait()


def _config(trials: int, max_t: int, out: Path) -> Path:
    import yaml

    os.environ["P2M_BENCH_MAX_T"] = str(max_t)  # the trials' processes inherit it
    path = out / "scale.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": "scale", "base": {"profile": "tiny"},
        "search": {"num_samples": trials, "max_concurrent": 8, "seed": 0, "algorithm": "tpe"},
        "baselines": {"published": {}},
        "scheduler": {"type": "asha", "max_t": max_t, "grace_period": 1, "reduction_factor": 3},
        "resources": {"cpu": 0.25, "gpu": 0}, "failure": {"max_failures": 0},
        "storage": {"path": str(out)}}))
    return path


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
