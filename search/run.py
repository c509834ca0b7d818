"""Launch and resume searches: Ray Tune's Tuner with the Optuna searcher, ASHA and the Parquet callback.

The experiment directory (``storage.path/name``) holds Ray's experiment state and trial checkpoints, the
settings file (``SETTINGS_FILE``: what ``resume``, ``train-best`` and the analysis read back), the space
(``SPACE_FILE``), the Optuna journal, and the Parquet tables (``RESULTS_DIR``, ``TRIALS_FILE``).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import ray
import yaml
from ray import tune
from ray.tune.logger import CSVLoggerCallback
from ray.tune.search import BasicVariantGenerator

from p2m.config import to_plain
from p2m.names import MODE, OBJECTIVE, RESULTS_DIR, SETTINGS_FILE, VIEWS_DIR, val_column, weight
from results import storage
from results.schema import ITERATION, KEY
from results.space import write_space
from results.store import VIEWS_KEY, compact, remove_temporaries
from search.callbacks import ParquetResults
from search.config import SearchConfig, load_experiment_config
from search.optuna_adapter import optuna_storage
from search.optuna_adapter import quiet as quiet_optuna
from search.ray_adapter import LostCheckpoints, asha_milestones, init_local_ray, quiet_logs
from search.population import POPULATION_SCHEDULERS, build_population_scheduler, changing_keys
from search.population import param_space as population_space
from search.schedulers import build_scheduler, build_searcher
from search.trainable import train_trial, trial_resources


def experiment_dir(cfg: SearchConfig) -> storage.Location:
    """``storage.path/name``: a local ``Path``, or a URI string on object storage (``s3://``, ``gs://``)."""
    return storage.join(storage.location(cfg.storage_path), cfg.name)


def launch(cfg: SearchConfig, address: str | None = None, verbose: int = 1, trainable=None):
    """Run a new search to the end; returns Ray's ResultGrid. ``trainable``: a Ray Tune function trainable in
    place of training (``benchmarks/bench_scale.py``'s synthetic curves).

    Raises:
        ValueError: when the experiment directory already holds a search (resume it instead).
    """
    exp = experiment_dir(cfg)
    if storage.exists(storage.join(exp, SETTINGS_FILE)):
        raise ValueError(f"{exp}: already holds a search (p2m search resume {exp}, or choose another --name)")
    baselines = cfg.named_points()
    space = cfg.space()
    population = cfg.scheduler in POPULATION_SCHEDULERS
    if population:
        scheduler = build_population_scheduler(cfg.scheduler, space, cfg.perturbation_interval, baselines, cfg.max_t)
    else:
        scheduler = build_scheduler(cfg.scheduler, cfg.max_t, cfg.grace_period, cfg.reduction_factor, baselines)
    if cfg.scheduler == "asha":  # recorded as the scheduler computed them: the analysis reads them back
        cfg = dataclasses.replace(cfg, rungs=asha_milestones(scheduler))
    write_space(exp, space)
    storage.write_bytes(storage.join(exp, SETTINGS_FILE),
                        yaml.safe_dump(to_plain(cfg.to_dict()), sort_keys=False).encode())
    init_ray(address)
    try:
        param_space = None
        if population:  # Ray's own generator draws the population (it refuses a searcher with PBT and PB2)
            param_space = population_space(space, cfg.scheduler,
                                           tuple(dict.fromkeys(k for p in baselines.values() for k in p)))
            searcher = BasicVariantGenerator(points_to_evaluate=list(baselines.values()) or None,
                                             max_concurrent=cfg.max_concurrent, random_state=cfg.seed)
        else:
            study_storage = optuna_storage(exp, cfg.optuna_url, new=True)
            searcher = build_searcher(space, cfg.points_to_evaluate(), study_storage, cfg.seed, cfg.max_t,
                                      cfg.max_concurrent, cfg.algorithm, cfg.side_points(), cfg.objective_modes())
        tuner = tune.Tuner(
            _trainable(cfg, exp) if trainable is None else _with_resources(cfg, trainable),
            param_space=param_space,
            # metric and mode live in the searcher, ASHA and the reporter; TuneConfig must not repeat them.
            # Actors are not reused: a stopped trial's thread parks instead of ending (search.trainable).
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=cfg.num_samples,
                                        reuse_actors=False),
            run_config=_run_config(cfg, exp, verbose))
        return tuner.fit()
    finally:
        ray.shutdown()


def resume(exp: str | Path, address: str | None = None, restart_errored: bool = False, verbose: int = 1,
           trainable=None):
    """Continue a search from its experiment directory (unfinished trials from their checkpoints).

    The results tables are compacted first (a driver that died left their parts, and perhaps a merge
    half done: :mod:`results.store`). ``trainable``: the one the search was launched with, when not training's."""
    exp = storage.location(exp)
    cfg = load_experiment_config(storage.join(exp, SETTINGS_FILE))
    for table, key in ((RESULTS_DIR, KEY), (VIEWS_DIR, VIEWS_KEY)):
        remove_temporaries(exp, table)
        compact(exp, table, key)
    init_ray(address)
    try:
        trainable = _trainable(cfg, exp) if trainable is None else _with_resources(cfg, trainable)
        if not tune.Tuner.can_restore(str(exp)):
            raise ValueError(f"{exp}: no Ray Tune experiment state to resume from")
        tuner = tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=restart_errored)
        return tuner.fit()
    finally:
        ray.shutdown()


def _trainable(cfg: SearchConfig, exp: storage.Location):
    changing = changing_keys(cfg.space()) if cfg.scheduler in POPULATION_SCHEDULERS else ()
    fn = tune.with_parameters(train_trial, base=cfg.base.to_dict(), experiment_dir=str(exp),
                              val_per_view=cfg.val_per_view, changing=changing)
    return _with_resources(cfg, fn)


def _with_resources(cfg: SearchConfig, trainable):
    return tune.with_resources(trainable, trial_resources(cfg.cpu, cfg.gpu))


def _run_config(cfg: SearchConfig, exp: storage.Location, verbose: int) -> tune.RunConfig:
    reporter = tune.CLIReporter(
        metric_columns={ITERATION: "epochs", OBJECTIVE: "val CD s3", val_column(3, "f_tau"): "F@tau s3"},
        parameter_columns={w.param: w.field for w in (weight(1, "chamfer"), weight(2, "edge"), weight(3, "laplacian"))},
        max_report_frequency=30, sort_by_metric=True, metric=OBJECTIVE, mode=MODE)
    return tune.RunConfig(
        name=storage.name_of(exp), storage_path=str(storage.parent_of(exp)), verbose=verbose,
        progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        # a population scheduler clones another trial's checkpoint a few epochs after it was written
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=2 * cfg.perturbation_interval + 2 if cfg.scheduler in POPULATION_SCHEDULERS else 2),
        # Ray's per-trial progress.csv stays; its JSON and TensorBoard loggers are off (init_ray): each costs the
        # driver time on every result (benchmarks/bench_scale.py), and the Parquet tables hold every result
        callbacks=[ParquetResults(exp, cfg.name, cfg.max_t, cfg.base.flat(), cfg.named_points()),
                   CSVLoggerCallback(), LostCheckpoints()])


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


__all__ = ["launch", "resume", "experiment_dir", "init_ray"]
