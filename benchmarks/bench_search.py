"""Orchestration cost: how fast results go through the Parquet callback, and where a real trial's time goes.

1. A search of cheap trials (a function trainable that only reports) on the embedded local Ray, once with the
   real ``ParquetResults`` callback and once without: results per second, the callback's milliseconds per
   row, and the wall-time ratio of the two runs (measured in one run of this script).
2. For a real search (default: the study's ASHA + TPE experiment), the share of the trials' seconds spent in
   training steps, in validation, and in everything else (Ray's reporting, checkpoints, start-up), from the
   rows: per epoch, training seconds = samples seen / ``train_samples_per_second``.

    python benchmarks/bench_search.py [--trials 8 --results 50] [--experiment /tmp/p2m-study/experiments/asha_tpe]
    python benchmarks/bench_search.py --shares-only --experiment benchmarks/evidence/fidelity/fifo_const_ema1
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--results", type=int, default=50, help="results each cheap trial reports")
    parser.add_argument("--experiment", default="/tmp/p2m-study/experiments/asha_tpe")
    parser.add_argument("--smoke-test", action="store_true")
    parser.add_argument("--shares-only", action="store_true", help="only part 2, on --experiment")
    args = parser.parse_args()
    if args.smoke_test:
        args.trials, args.results = 2, 5
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, no GPU used")
    if not args.shares_only:
        cheap_search(args.trials, args.results)
    if Path(args.experiment).is_dir():
        time_shares(Path(args.experiment))


def cheap_search(trials: int, results: int) -> None:
    """The same cheap search twice: a callback that only notes when each result arrives, then that callback
    around the real ``ParquetResults``. Throughput is taken between the first and the last result (Ray's
    start-up of the trials is not the callback's cost)."""
    import ray
    from ray import tune

    from p2m.names import EPOCH, OBJECTIVE
    from results.parquet import read_results
    from search.callbacks import ParquetResults
    from search.run import init_ray

    def trainable(config):
        for i in range(results):
            tune.report({OBJECTIVE: 1.0 / (i + 1), EPOCH: i + 1})

    class Timed(tune.Callback):
        def __init__(self, inner=None):
            self.inner, self.arrivals, self.spent = inner, [], []

        def on_trial_result(self, *args, **kwargs):
            t = time.perf_counter()
            self.arrivals.append(t)
            if self.inner:
                self.inner.on_trial_result(*args, **kwargs)
                self.spent.append(time.perf_counter() - t)

        def on_trial_complete(self, *args, **kwargs):
            if self.inner:
                self.inner.on_trial_complete(*args, **kwargs)

        def on_experiment_end(self, *args, **kwargs):
            if self.inner:
                self.inner.on_experiment_end(*args, **kwargs)

    rates = {}
    for with_parquet in (False, True):
        root = Path(tempfile.mkdtemp(prefix="p2m-bench-search-"))
        timed = Timed(ParquetResults(root / "cheap", "cheap", max_t=results) if with_parquet else None)
        init_ray(None)
        try:
            tune.Tuner(tune.with_resources(trainable, {"cpu": 0.5}), tune_config=tune.TuneConfig(num_samples=trials),
                       param_space={"x": tune.uniform(0, 1)},
                       run_config=tune.RunConfig(name="cheap", storage_path=str(root), verbose=0,
                                                 callbacks=[timed])).fit()
        finally:
            ray.shutdown()
        n, span = len(timed.arrivals), timed.arrivals[-1] - timed.arrivals[0]
        rates[with_parquet] = (n - 1) / span
        line = (f"cheap search, {'ParquetResults' if with_parquet else 'no table    '}: {trials} trials x {results} "
                f"results, {n} results in {span:.1f} s from the first to the last = {rates[with_parquet]:.0f} results/s")
        if with_parquet:
            stored = len(read_results(root / "cheap"))
            assert stored == trials * results, (stored, trials * results)
            spent = sorted(timed.spent)
            line += (f"; the callback {1000 * sum(spent) / len(spent):.2f} ms/row mean, "
                     f"{1000 * spent[len(spent) // 2]:.2f} ms median; {stored} rows stored")
        print(line)
        shutil.rmtree(root, ignore_errors=True)
    print(f"cheap search throughput, with / without the Parquet table: {rates[True] / rates[False]:.2f}x")


def time_shares(exp: Path) -> None:
    import yaml

    from p2m.data.layout import find_samples
    from p2m.names import EPOCH_SECONDS, SAMPLES_PER_SECOND, SETTINGS_FILE
    from results.parquet import read_results

    rows = read_results(exp)
    cfg = yaml.safe_load((exp / SETTINGS_FILE).read_text())["base"]
    batch, steps = cfg["optim"]["batch_size"], cfg["optim"]["steps_per_epoch"]
    train_views = len(find_samples(cfg["data"]["root"], cfg["data"]["train_split"]))
    seen = steps * batch if steps else (train_views // batch) * batch  # drop_last when a batch would be short
    train_s = (seen / rows[SAMPLES_PER_SECOND]).sum()
    epoch_s = rows[EPOCH_SECONDS].sum()
    total_s = rows["time_this_iter_s"].sum()
    print(f"real search {exp.name}: {len(rows)} trial-epochs, {total_s / 3600:.2f} trial-hours "
          f"({seen} training samples per epoch, batch {batch})")
    print(f"  training steps {train_s / total_s:.1%}, validation {(epoch_s - train_s) / total_s:.1%}, "
          f"reporting/checkpoints/start-up {(total_s - epoch_s) / total_s:.1%} of the trials' seconds")
    first = rows[rows["training_iteration"] == 1]
    print(f"  first epochs (model build, data loading): {first['time_this_iter_s'].mean():.1f} s mean vs "
          f"{rows.loc[rows['training_iteration'] > 1, 'time_this_iter_s'].mean():.1f} s for later epochs")


if __name__ == "__main__":
    main()
