"""Launch and resume searches: Ray Tune's Tuner with the Optuna searcher, ASHA and the Parquet callback.

The experiment directory (``storage.path/name``) holds Ray's experiment state and trial checkpoints,
``search_config.yaml`` (what ``resume`` and ``train-best`` read back), the Optuna journal, and the
Parquet tables (``results/``, ``trials.parquet``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import ray
import yaml
from ray import tune

from p2m.config import to_plain
from p2m.data.datfile import atomic_write_bytes
from results.schema import MODE, OBJECTIVE, PREVIEWS_DIR, SPACE_FILE
from search.callbacks import ParquetResults
from search.config import SearchConfig, search_config_from_dict
from search.space import space_to_dict
from search.schedulers import build_scheduler, build_searcher, optuna_storage
from search.trainable import train_trial

CONFIG_FILE = "search_config.yaml"


def experiment_dir(cfg: SearchConfig) -> Path:
    return Path(cfg.storage_path).expanduser().resolve() / cfg.name


def launch(cfg: SearchConfig, address: str | None = None, verbose: int = 1):
    """Run a new search to the end; returns Ray's ResultGrid.

    Raises:
        ValueError: when the experiment directory already holds a search (resume it instead).
    """
    exp = experiment_dir(cfg)
    if (exp / CONFIG_FILE).exists():
        raise ValueError(f"{exp}: already holds a search (p2m search resume {exp}, or choose another --name)")
    exp.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(exp / CONFIG_FILE, yaml.safe_dump(to_plain(cfg.to_dict()), sort_keys=False).encode())
    atomic_write_bytes(exp / SPACE_FILE, json.dumps(space_to_dict(cfg.space()), indent=1).encode())
    _init_ray(address, cfg)
    try:
        tuner = _new_tuner(cfg, exp, verbose)
        return tuner.fit()
    finally:
        ray.shutdown()


def resume(exp: str | Path, address: str | None = None, restart_errored: bool = False, verbose: int = 1):
    """Continue a search from its experiment directory (unfinished trials from their checkpoints)."""
    exp = Path(exp).expanduser().resolve()
    cfg = load_experiment_config(exp)
    _init_ray(address, cfg)
    try:
        trainable = _trainable(cfg, exp)
        if not tune.Tuner.can_restore(str(exp)):
            raise ValueError(f"{exp}: no Ray Tune experiment state to resume from")
        tuner = tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=restart_errored)
        return tuner.fit()
    finally:
        ray.shutdown()


def load_experiment_config(exp: str | Path) -> SearchConfig:
    path = Path(exp) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{path}: not a p2m search experiment (no {CONFIG_FILE})")
    data = yaml.safe_load(path.read_text())
    base = data.pop("base")
    from p2m.config import TrainConfig, from_dict

    fields = dict(data)
    fields["base"] = from_dict(base, base=TrainConfig(), source=str(path))
    return SearchConfig(**fields)


def _new_tuner(cfg: SearchConfig, exp: Path, verbose: int) -> tune.Tuner:
    space = cfg.space()
    searcher = build_searcher(_tune_space(space), cfg.points_to_evaluate(), optuna_storage(exp, cfg.optuna_url),
                              cfg.seed, cfg.max_t, cfg.max_concurrent, cfg.algorithm)
    scheduler = build_scheduler(cfg.scheduler, cfg.max_t, cfg.grace_period, cfg.reduction_factor)
    return tune.Tuner(
        _trainable(cfg, exp),
        # metric and mode live in the searcher, ASHA and the reporter; TuneConfig must not repeat them
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=cfg.num_samples),
        run_config=_run_config(cfg, exp, verbose))


def _trainable(cfg: SearchConfig, exp: Path):
    from search.trainable import trial_resources

    fn = tune.with_parameters(train_trial, base=cfg.base.to_dict(), preview_dir=str(exp / PREVIEWS_DIR))
    return tune.with_resources(fn, trial_resources(cfg.cpu, cfg.gpu))


def _run_config(cfg: SearchConfig, exp: Path, verbose: int) -> tune.RunConfig:
    reporter = tune.CLIReporter(
        metric_columns={"training_iteration": "epochs", OBJECTIVE: "val CD s3", "val_s3_f_tau": "F@tau s3"},
        parameter_columns={"loss.w1_chamfer": "w1_ch", "loss.w2_edge": "w2_edge", "loss.w3_laplacian": "w3_lap"},
        max_report_frequency=30, sort_by_metric=True, metric=OBJECTIVE, mode=MODE)
    return tune.RunConfig(
        name=exp.name, storage_path=str(exp.parent), verbose=verbose, progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=[ParquetResults(exp, cfg.name, cfg.max_t, cfg.base.flat(),
                                  dict(zip(cfg.baselines, cfg.points_to_evaluate())))])


def _tune_space(space: dict) -> dict:
    from search.space import Choice, LogUniform

    out = {}
    for key, domain in space.items():
        if isinstance(domain, LogUniform):
            out[key] = tune.loguniform(domain.low, domain.high)
        elif isinstance(domain, Choice):
            out[key] = tune.choice(list(domain.values))
        else:  # pragma: no cover - space_from_dict builds only these
            raise TypeError(f"unknown domain for {key}: {domain!r}")
    return out


def _init_ray(address: str | None, cfg: SearchConfig) -> None:
    """Ray for this search: a new local instance bound to loopback when no address is given (never a stale
    cluster found by accident), else the cluster at ``address`` ("auto" or HOST:PORT)."""
    if ray.is_initialized():
        ray.shutdown()
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # the classic reporter: one compact table every 30 s instead of a box per result
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address is None:
        # Ray's single-machine mode: without it Ray 2.60 turns "127.0.0.1" into the machine's outward IP
        # and its gRPC servers listen on every interface; with it every server binds to loopback. The
        # environment variable reaches the Ray processes started below; the driver read the constant
        # when it imported ray, so it is set here too.
        from ray._private import ray_constants

        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=True,
                 configure_logging=True, logging_level="WARNING")
    else:
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")


__all__ = ["launch", "resume", "load_experiment_config", "experiment_dir", "search_config_from_dict"]
