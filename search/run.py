"""Launch and resume searches: Ray Tune's Tuner with the Optuna searcher, ASHA and the Parquet callback.

The experiment directory (``storage.path/name``) holds Ray's experiment state and trial checkpoints, the
settings file (``SETTINGS_FILE``: what ``resume``, ``train-best`` and the analysis read back), the space
(``SPACE_FILE``), the Optuna journal, and the Parquet tables (``RESULTS_DIR``, ``TRIALS_FILE``).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import ray
import yaml
from ray import tune
from ray.tune.logger import CSVLoggerCallback

from p2m.codec import to_plain
from p2m.names import MODE, OBJECTIVE, RESULTS_DIR, SETTINGS_FILE, VIEWS_DIR, val_column, weight
from results import storage
from results.schema import ITERATION, KEY
from results.lease import LEASE_FILE, Lease
from results.space import write_space
from results.parquet import VIEWS_KEY, compact, remove_temporaries
from search.callbacks import ParquetResults
from search.config import SearchConfig, load_experiment_config
from search.optuna_adapter import quiet as quiet_optuna
from search.outcome import Outcome, fit
from search.ray_adapter import LostCheckpoints, init_local_ray, quiet_logs
from search.preflight import preflight_config
from search.retention import Retention
from search.schedulers import strategy
from search.space import baseline_name
from search.trainable import train_trial, trial_resources
from search.trial_dirs import TrialDirName
from search.trust import SIGNATURES, SignState, restore_key, verify


def experiment_dir(cfg: SearchConfig) -> storage.Location:
    """``storage.path/name``: a local ``Path``, or a URI string on object storage (``s3://``, ``gs://``)."""
    return storage.experiment(cfg.storage_path, cfg.name)


def launch(cfg: SearchConfig, address: str | None = None, verbose: int = 1, trainable=None) -> Outcome:
    """Run a new search to the end under this driver's lease; returns its :class:`Outcome`. ``trainable``: a Ray
    Tune function trainable in place of training (``benchmarks/bench_scale.py``'s synthetic curves).

    An experiment whose launch died before Ray's first signed snapshot (its settings there, no signatures: nothing
    ``resume`` could restore) is started again from nothing.

    Raises:
        ValueError: when the experiment directory already holds a search (resume it instead), or another driver
            holds it (:class:`results.lease.LeaseHeld`), or the trials ask for more than a node has.
    """
    exp = experiment_dir(cfg)
    with Lease(exp, "launch"):
        if storage.exists(storage.join(exp, SIGNATURES)):
            raise ValueError(f"{exp}: already holds a search (p2m search resume {exp}, or choose another --name)")
        if storage.exists(storage.join(exp, SETTINGS_FILE)):
            print(f"{exp}: its launch stopped before Ray's first snapshot; starting it again", flush=True)
            _start_over(exp)
        restore_key(create=True)  # before anything is written: a driver without a key would refuse to resume
        return _launch(cfg, exp, address, verbose, trainable)


def _launch(cfg: SearchConfig, exp: storage.Location, address: str | None, verbose: int, trainable) -> Outcome:
    baselines = cfg.named_points()
    space = cfg.space()
    scheduling = strategy(cfg.scheduler)
    scheduler = scheduling.build(cfg, space, baselines)
    cfg = dataclasses.replace(cfg, rungs=scheduling.rungs(scheduler))  # the analysis reads them back
    write_space(exp, space)
    storage.write_bytes(storage.join(exp, SETTINGS_FILE),
                        yaml.safe_dump(to_plain(cfg.to_dict()), sort_keys=False).encode())
    init_ray(address)
    try:
        check_resources(cfg.cpu, cfg.gpu, local=address is None)
        preflight_config(cfg.base.data, exp)  # every node reads the data, writes the experiment
        param_space = scheduling.param_space(space, baselines)
        searcher = scheduling.search_algorithm(cfg, exp, space)
        tuner = tune.Tuner(
            _trainable(cfg, exp) if trainable is None else _with_resources(cfg, trainable),
            param_space=param_space,
            # metric and mode live in the searcher, ASHA and the reporter; TuneConfig must not repeat them.
            # Actors are not reused: a stopped trial's thread parks instead of ending (search.trainable).
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=cfg.num_samples,
                                        reuse_actors=False, trial_dirname_creator=TrialDirName(
                                            functools.partial(baseline_name, baselines=baselines))),
            run_config=_run_config(cfg, exp, verbose))
        return fit(tuner, exp, cfg.num_samples)
    finally:
        ray.shutdown()


def resume(exp: str | Path, address: str | None = None, restart_errored: bool = False, verbose: int = 1,
           trainable=None) -> Outcome:
    """Continue a search from its experiment directory (unfinished trials from their checkpoints), under this
    driver's lease, once its Ray state has proven to be signed with this machine's restore key
    (:mod:`search.trust`); returns its :class:`Outcome`.

    The results tables are compacted first (a driver that died left their parts, and perhaps a merge
    half done: :mod:`results.parquet`). ``trainable``: the one the search was launched with, when not training's."""
    exp = storage.location(exp)
    if not storage.is_remote(exp) and exp.exists() and not exp.is_dir():
        raise ValueError(f"{exp}: not an experiment directory (a file)")
    cfg = load_experiment_config(storage.join(exp, SETTINGS_FILE))
    with Lease(exp, "resume"):
        if not storage.exists(storage.join(exp, SIGNATURES)):
            raise ValueError(f"{exp}: no signed Ray Tune snapshot to resume from (its launch stopped before its first "
                             "trial started: run the launch again, it starts over; or an experiment of an older "
                             f"p2m-search: p2m search trust {exp})")
        verify(exp, restore_key())
        for table, key_columns in ((RESULTS_DIR, KEY), (VIEWS_DIR, VIEWS_KEY)):
            remove_temporaries(exp, table)
            compact(exp, table, key_columns)
        init_ray(address)
        try:
            check_resources(cfg.cpu, cfg.gpu, local=address is None)
            preflight_config(cfg.base.data, exp)  # every node reads the data, writes the experiment
            trainable = _trainable(cfg, exp) if trainable is None else _with_resources(cfg, trainable)
            if not tune.Tuner.can_restore(str(exp)):
                raise ValueError(f"{exp}: no Ray Tune experiment state to resume from")
            tuner = tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=False,
                                       restart_errored=restart_errored)
            restored = strategy(cfg.scheduler).restored(tuner, exp, cfg)
            if restored:
                print(restored, flush=True)
            return fit(tuner, exp, cfg.num_samples)
        finally:
            ray.shutdown()


def check_resources(cpu: float, gpu: float, local: bool) -> None:
    """Refuse trials that no alive node can hold (Ray would keep them pending for ever): on the embedded local Ray,
    a one-line error; on a cluster, which may yet grow, a warning line.

    Raises:
        ValueError: naming the setting, what a trial asks and what the largest node has.
    """
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for key, ask, kind in (("resources.cpu", cpu, "CPU"), ("resources.gpu", gpu, "GPU")):
        most = max((float(r.get(kind, 0.0)) for r in nodes), default=0.0)
        if ask > most:
            line = f"{key} {ask:g}: a trial asks for more than any node has (the largest has {most:g} {kind})"
            if local:
                raise ValueError(line)
            print(f"p2m: warning: {line}; its trials wait until such a node joins", flush=True)


def _start_over(exp: storage.Location) -> None:
    """Remove everything of ``exp`` but the driver lease (a launch that died before its first snapshot)."""
    for loc in storage.list_files(exp):
        if not storage.name_of(loc).startswith(LEASE_FILE):
            storage.delete(loc)
    for name in storage.subdirs(exp):
        storage.remove_tree(storage.join(exp, name))


def _trainable(cfg: SearchConfig, exp: storage.Location):
    changing = strategy(cfg.scheduler).changing_keys(cfg.space())
    fn = tune.with_parameters(train_trial, base=cfg.base.to_dict(), experiment_dir=str(exp),
                              val_per_view=cfg.val_per_view, changing=changing)
    return _with_resources(cfg, fn)


def _with_resources(cfg: SearchConfig, trainable):
    return tune.with_resources(trainable, trial_resources(cfg.cpu, cfg.gpu))


def _run_config(cfg: SearchConfig, exp: storage.Location, verbose: int) -> tune.RunConfig:
    scheduling = strategy(cfg.scheduler)
    reporter = tune.CLIReporter(
        metric_columns={ITERATION: "epochs", OBJECTIVE: "val CD s3", val_column(3, "f_tau"): "F@tau s3"},
        parameter_columns={w.param: w.field for w in (weight(1, "chamfer"), weight(2, "edge"), weight(3, "laplacian"))},
        max_report_frequency=30, sort_by_metric=True, metric=OBJECTIVE, mode=MODE)
    return tune.RunConfig(
        name=storage.name_of(exp), storage_path=str(storage.parent_of(exp)), verbose=verbose,
        progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=scheduling.checkpoints_to_keep(cfg)),
        # Ray's per-trial progress.csv stays; its JSON and TensorBoard loggers are off (init_ray): each costs the
        # driver time on every result (benchmarks/bench_scale.py), and the Parquet tables hold every result
        callbacks=[ParquetResults(exp, cfg.name, cfg.max_t, cfg.base.flat(), cfg.named_points()),
                   CSVLoggerCallback(), LostCheckpoints(),
                   Retention(exp, cfg.keep_best, cfg.max_t, cfg.named_points(),
                             until_all_ended=scheduling.shares_checkpoints),
                   SignState()])


def init_ray(address: str | None) -> None:
    """Ray for this search: a new local instance bound to loopback when no address is given, else the cluster
    at ``address`` ("auto" or HOST:PORT)."""
    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # the classic reporter: one compact table every 30 s instead of a box per result
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # no result.json and TensorBoard event files per trial (Ray's documented switch; _run_config keeps the CSV)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    quiet_logs(local=address is None)
    quiet_optuna()
    if address is None:
        init_local_ray()
    else:
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")


__all__ = ["check_resources", "launch", "resume", "experiment_dir", "init_ray"]
