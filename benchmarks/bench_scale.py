"""A 1,000-trial search, measured: the real searcher (Optuna TPE behind ``P2MOptunaSearch``), ASHA, the Parquet
sink and ``analyze``, with trials that only report synthetic learning curves (no training), on this machine.

    python benchmarks/bench_scale.py [--trials 1000] [--max-t 50] [--out /tmp/p2m-bench-scale]

Each trial reports ``max_t`` epochs of every validation metric: a curve falling as ``epoch ** -0.7`` towards a
floor set by the distance of the trial's log10 weights from a hidden optimum, with 1% noise per epoch, so TPE
has something to find and ASHA something to stop. The search is ``p2m search launch``'s own code
(``search.run.launch``) with this trainable in place of the training one; 8 trials at a time (0.25 CPU each).

``--table-cost`` runs the search twice instead, without then with the Parquet table's per-result writes, to show
where the driver's time goes.

Each epoch a trial also reports a checkpoint, as the training trainable does: a directory holding one small file
that says what kind of checkpoint it stands for (the last epoch's is a final one, :func:`p2m.checkpoint.final_weights`),
so the search's retention (:mod:`search.retention`, the default ``storage.keep_best``) deletes and keeps them as it
would real ones. Their bytes are counted at the real sizes of the ``paper`` profile's checkpoints, a full one and a
final one, measured first by training that profile one step (``p2m.train.fit``). *Before* is what the search kept
without retention (every checkpoint full, Ray's ``num_to_keep`` only: each trial's checkpoints as they stood when it
ended, counted at that moment, before retention acts); *after* is what is left on disk at the end.

Printed: the driver's CPU milliseconds per result (this process's CPU time, all its threads: Ray's controller,
the searcher, the callback, from the first result to the last, divided by the results between); TPE's seconds
per suggestion around the 100th, 500th and 1,000th trial; the driver's peak memory; the results table's file
count (the most seen while the search ran, and at the end); the time of ``resume`` on the finished experiment
and of ``analyze``; each against its goal.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from _study import cpu_name, search_config, synth_data

BLOCKS = 20  # batch means: the driver's CPU per result in 20 consecutive blocks of the results, for its interval
GOALS = {"driver": 5.0, "suggest": 0.100, "analyze": 30.0}  # ms per result, s per suggestion at 1000, s
KIND_FILE, FULL, FINAL = "kind.txt", "full", "final"  # a synthetic checkpoint: which real one it stands for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--max-t", type=int, default=50)
    parser.add_argument("--out", default="/tmp/p2m-bench-scale")
    parser.add_argument("--table-cost", action="store_true",
                        help="instead: the same search twice, the Parquet table's writes skipped then done, and the "
                             "driver's CPU per result of each (where the driver's time goes)")
    parser.add_argument("--no-checkpoints", action="store_true",
                        help="trials report no checkpoint (as before retention came: to compare the driver's CPU per "
                             "result with a commit of then, like for like); no checkpoint bytes are counted")
    args = parser.parse_args()

    from results.analysis.report import analyze
    from search.run import resume

    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; Python {sys.version.split()[0]}, "
          f"{args.trials} trials x up to {args.max_t} epochs, ASHA (grace 1, factor 3), TPE, 8 trials at a time")
    data = synth_data(Path(f"{args.out}-data"), 4, 4, 3)  # a small synthetic dataset (made once, then kept)
    if args.table_cost:
        for table in (False, True):
            run = _search(args, Path(args.out) / ("with-table" if table else "no-table"), table, data)
            print(f"  {'with' if table else 'without'} the Parquet table's writes: driver CPU per result "
                  f"{run['per_result']:.2f} ms over {run['results']} results")
        return
    run = _search(args, Path(args.out), table=True, data=data)
    exp = run["exp"]
    before, after = run["before"], kept_checkpoints(exp)
    if args.no_checkpoints:
        assert before == 0 and not any(after.values()), "a trial reported a checkpoint"
    t0 = time.perf_counter()
    resume(exp, verbose=0, trainable=synthetic_trial)
    resume_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    analyze([exp], exp.parent / "analysis")
    analyze_s = time.perf_counter() - t0
    if not args.no_checkpoints:
        sizes = checkpoint_sizes(data, Path(f"{args.out}-sizes"))  # after the search: its peak memory is the driver's

    print(f"search: {run['trials']} trials, {run['results']} results in {run['wall']:.0f} s of wall time "
          f"({run['span']:.0f} s from the first result to the last, {run['results'] / run['span']:.1f} results/s); "
          f"driver CPU {run['cpu']:.0f} s in all")
    per_result = run["per_result"]
    low, high = block_interval(run["arrivals"])
    print(f"driver CPU per result: {per_result:.3f} ms, 95% interval {low:.3f} to {high:.3f} (batch means of "
          f"{BLOCKS} consecutive blocks of results)")
    lines = [("driver CPU per result (ms)", per_result, f"<= {GOALS['driver']:.0f}", per_result <= GOALS["driver"])]
    suggest_times = run["suggest_times"]
    for n in (100, 500, 1000):
        window = suggest_times[max(0, n - 50):n]
        if len(window) >= 10 and n <= len(suggest_times):
            value = statistics.median(window)
            goal = n == 1000
            lines.append((f"TPE suggestion at ~{n} trials (s, median of {len(window)})", value,
                          f"<= {GOALS['suggest']}" if goal else "", value <= GOALS["suggest"] if goal else None))
    lines += [("driver peak memory (MB)", run["peak_mb"], "", None),
              ("results files, most while running", run["most_files"], "", None),
              ("results files at the end", run["files_end"], "", None),
              ("resume of the finished search (s)", resume_s, "", None),
              ("analyze (s)", analyze_s, f"<= {GOALS['analyze']:.0f}", analyze_s <= GOALS["analyze"])]
    if not args.no_checkpoints:
        lines += _checkpoint_lines(run, before, after, sizes)
    width = max(len(name) for name, *_ in lines)
    for name, value, goal, met in lines:
        verdict = "" if met is None else ("met" if met else "NOT met")
        print(f"  {name:<{width}}  {value:>10.3f}  {goal:>8}  {verdict}")


def _checkpoint_lines(run: dict, before: int, after: dict[str, int], sizes: dict[str, int]) -> list[tuple]:
    """The checkpoint bytes written and kept, at the paper profile's sizes (and the counts they come from, printed)."""
    written = run["written"]
    gb = 1e-9
    print(f"checkpoints of the paper profile (measured): full {sizes[FULL] / 1e6:.1f} MB, final {sizes[FINAL] / 1e6:.1f} MB")
    print(f"checkpoints: {written[FULL]} full and {written[FINAL]} final written; kept at the end: before {before} "
          f"(all full), after {after[FULL]} full and {after[FINAL]} final")
    return [("checkpoints written per trial-epoch (MB)",
             sum(written[k] * sizes[k] for k in written) / run["results"] / 1e6, "", None),
            ("checkpoints written in all (GB)", sum(written[k] * sizes[k] for k in written) * gb, "", None),
            ("checkpoints kept at the end, before: no retention (GB)", before * sizes[FULL] * gb, "", None),
            ("checkpoints kept at the end, after: retention (GB)",
             sum(after[k] * sizes[k] for k in after) * gb, "", None)]


def _search(args, out: Path, table: bool, data: Path) -> dict:
    """One synthetic search through ``search.run.launch``, timed; ``table=False`` skips the Parquet callback's
    per-result work (its trials table and compaction stay)."""
    import dataclasses

    from p2m.config import TrainConfig
    from p2m.names import RESULTS_DIR
    from results.schema import ITERATION
    from results.parquet import list_parts, read_results, read_trials
    from search import callbacks, ray_adapter, retention
    from search.ray_adapter import trial_dir_name
    from search.config import load_search_config
    from search.run import launch

    shutil.rmtree(out, ignore_errors=True)
    cfg = load_search_config(_config(args.trials, args.max_t, out, not args.no_checkpoints), {})
    cfg = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, data=dataclasses.replace(
        TrainConfig().data, root=str(data))))  # real data: the pre-flight reads its file lists (trials do not)
    exp = out / cfg.name

    suggest_times: list[float] = []
    real_suggest = ray_adapter.P2MOptunaSearch.suggest

    def timed_suggest(self, trial_id):
        t0 = time.perf_counter()
        try:
            return real_suggest(self, trial_id)
        finally:
            suggest_times.append(time.perf_counter() - t0)

    arrivals: list[tuple[float, float]] = []  # (CPU seconds, wall seconds) of this process at each result
    real_result = callbacks.ParquetResults.on_trial_result

    def noted_result(self, *a, **k):
        if table:
            real_result(self, *a, **k)
        arrivals.append((_cpu(), time.perf_counter()))

    before = [0]  # checkpoints on disk when each trial ended, before retention acted
    real_complete = retention.Retention.on_trial_complete

    def counted_complete(self, iteration, trials, trial, **info):
        before[0] += len(list((exp / trial_dir_name(trial)).glob("checkpoint_*")))
        real_complete(self, iteration, trials, trial, **info)

    most_files, stop = [0], threading.Event()

    def count_files():
        while not stop.wait(1.0):
            most_files[0] = max(most_files[0], len(list_parts(exp / RESULTS_DIR)))

    counter = threading.Thread(target=count_files, daemon=True)
    counter.start()
    ray_adapter.P2MOptunaSearch.suggest = timed_suggest
    callbacks.ParquetResults.on_trial_result = noted_result
    retention.Retention.on_trial_complete = counted_complete
    cpu0, t0 = _cpu(), time.perf_counter()
    try:
        launch(cfg, verbose=0, trainable=synthetic_trial)
    finally:
        cpu, wall = _cpu() - cpu0, time.perf_counter() - t0
        ray_adapter.P2MOptunaSearch.suggest = real_suggest
        callbacks.ParquetResults.on_trial_result = real_result
        retention.Retention.on_trial_complete = real_complete
        stop.set()
        counter.join()
    # steady state, from the first result to the last (Ray's start-up and shutdown are not per result)
    run = {"exp": exp, "results": len(arrivals), "wall": wall, "cpu": cpu, "suggest_times": suggest_times,
           "per_result": 1000 * (arrivals[-1][0] - arrivals[0][0]) / (len(arrivals) - 1), "arrivals": arrivals,
           "span": arrivals[-1][1] - arrivals[0][1], "most_files": most_files[0],
           "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "before": before[0]}
    if table:
        run.update(trials=len(read_trials(exp)), files_end=len(list_parts(exp / RESULTS_DIR)))
        rows = read_results(exp)
        assert len(rows) == len(arrivals), "a result was lost or doubled"
        final = int((rows[ITERATION] == args.max_t).sum())  # one checkpoint per result, a final one at max_t
        run["written"] = {FULL: len(rows) - final, FINAL: final}
    return run


def block_interval(arrivals: list[tuple[float, float]], blocks: int | None = None) -> tuple[float, float]:
    """A 95% interval of the driver's CPU milliseconds per result, by batch means: the results cut into ``blocks``
    consecutive blocks, each block's CPU per result one value, a t interval over them (consecutive results share
    the driver's state; blocks of a thousand or more are nearly independent). Compare two runs by their intervals."""
    from scipy import stats

    blocks = blocks or BLOCKS
    cpu = [c for c, _ in arrivals]
    edges = [round(i * (len(cpu) - 1) / blocks) for i in range(blocks + 1)]
    means = [1000 * (cpu[b] - cpu[a]) / (b - a) for a, b in zip(edges, edges[1:]) if b > a]
    mean, sem = statistics.fmean(means), statistics.stdev(means) / len(means) ** 0.5
    half = stats.t.ppf(0.975, len(means) - 1) * sem
    return mean - half, mean + half


def checkpoint_sizes(data: Path, out: Path) -> dict[str, int]:
    """Bytes of a full and of a final checkpoint of the ``paper`` profile: one epoch of one step trained by
    ``p2m.train.fit`` on a small synthetic dataset, its checkpoint's file, and that checkpoint made final."""
    from p2m.checkpoint import final_weights, load_checkpoint, save_checkpoint
    from p2m.config import apply_overrides, profile_config
    from p2m.names import CHECKPOINT_DIR, CHECKPOINT_FILE
    from p2m.train import fit

    cfg = apply_overrides(profile_config("paper"), [f"data.root={data}", "optim.steps_per_epoch=1", "optim.max_epochs=1",
                                                    "data.val_limit=1", "device=cpu"])
    shutil.rmtree(out, ignore_errors=True)
    fit(cfg, out / "run", progress=False, save_best=False, log=None)
    path = out / "run" / CHECKPOINT_DIR / CHECKPOINT_FILE
    final = save_checkpoint(out / "final.pt", final_weights(load_checkpoint(path)))
    return {FULL: path.stat().st_size, FINAL: final.stat().st_size}


def kept_checkpoints(exp: Path) -> dict[str, int]:
    """How many checkpoints of each kind the experiment's trial directories hold."""
    kinds = [path.read_text() for path in exp.glob(f"*/checkpoint_*/{KIND_FILE}")]
    return {FULL: kinds.count(FULL), FINAL: kinds.count(FINAL)}


def synthetic_trial(params: dict) -> None:
    """A trial's curves without training: what ``search.trainable.train_trial`` reports, from a formula."""
    import math
    import random

    from ray import tune

    from p2m.names import EPOCH, EPOCH_SECONDS, LR, METRICS, STAGES, TRAIN_LOSS, val_column

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # as search.trainable: no line per checkpoint
    rng = random.Random(hash(tuple(sorted(params.items()))))
    logs = [math.log10(v) for k, v in sorted(params.items()) if k.startswith("loss.w") and v > 0]
    distance = math.sqrt(sum((x + 0.5) ** 2 for x in logs) / max(len(logs), 1))  # optimum: every weight 10^-0.5
    floor = 0.01 * (1 + distance)
    max_t = int(os.environ.get("P2M_BENCH_MAX_T", "50"))
    checkpoints = os.environ.get("P2M_BENCH_CHECKPOINTS", "1") == "1"
    for epoch in range(1, max_t + 1):
        cd = floor * (1 + 2 * epoch ** -0.7) * (1 + 0.01 * rng.gauss(0, 1))
        metrics = {}
        for s in STAGES:
            stage_cd = cd * (1 + 0.3 * (3 - s))
            for m in METRICS:
                metrics[val_column(s, m)] = {"cd": stage_cd, "cd_x1000": 1000 * stage_cd, "cd_pred_to_gt": stage_cd / 2,
                                             "cd_gt_to_pred": stage_cd / 2, "f_tau": 100 * math.exp(-50 * stage_cd),
                                             "f_2tau": 100 * math.exp(-25 * stage_cd),
                                             "normal_consistency": 0.9 - stage_cd, "smoothness": 0.1}[m]
        checkpoint = Path(tempfile.mkdtemp(prefix="p2m-bench-checkpoint-"))  # reported: Ray copies it into the trial's
        (checkpoint / KIND_FILE).write_text(FINAL if epoch == max_t else FULL)
        try:
            tune.report({**metrics, EPOCH: epoch, TRAIN_LOSS: 10 * cd, LR: 1e-4, EPOCH_SECONDS: 0.0},
                        checkpoint=tune.Checkpoint.from_directory(str(checkpoint)) if checkpoints else None)
        except SystemExit:  # Ray stops the trial: park the thread, as search.trainable does
            shutil.rmtree(checkpoint, ignore_errors=True)
            threading.Event().wait()
        shutil.rmtree(checkpoint, ignore_errors=True)


def _config(trials: int, max_t: int, out: Path, checkpoints: bool) -> Path:
    os.environ["P2M_BENCH_MAX_T"] = str(max_t)  # the trials' processes inherit them
    os.environ["P2M_BENCH_CHECKPOINTS"] = "1" if checkpoints else "0"
    return search_config(out / "scale.yaml", "scale", out, {"profile": "tiny"},
                         {"num_samples": trials, "max_concurrent": 8, "seed": 0, "algorithm": "tpe"},
                         {"type": "asha", "max_t": max_t, "grace_period": 1, "reduction_factor": 3},
                         cpu=0.25, max_failures=0)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
