"""``p2m search launch | resume | train-best`` (registered through the ``p2m.commands`` entry point)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from importlib.resources import files


def register(verbs) -> None:
    from p2m.cli import command_group

    sub = command_group(verbs, "search", "loss-weight search: Ray Tune + Optuna TPE + ASHA, results in Parquet")

    launch = sub.add_parser("launch", help="start a search (embedded local Ray unless --address)")
    launch.add_argument("--config", default=None, help="search YAML (default: the shipped demo config)")
    launch.add_argument("--address", default=None, help="Ray cluster: 'auto' or HOST:PORT (default: a new local Ray)")
    launch.add_argument("--name", default=None, help="experiment name (the directory under storage.path)")
    launch.add_argument("--num-samples", type=int, default=None, help="number of trials, the baselines included")
    launch.add_argument("--data", default=None, help="dataset directory (sets base.data.root)")
    launch.add_argument("--storage-path", default=None, help="where experiments go (sets storage.path)")
    launch.add_argument("--quiet", action="store_true", help="no per-trial progress table")
    launch.add_argument("--smoke-test", action="store_true",
                        help="check the set-up in seconds: 2 trials of 2 short tiny-profile epochs, on a small "
                             "synthetic dataset made under the storage path unless --data is given")
    launch.set_defaults(func=_launch)

    resume = sub.add_parser("resume", help="continue a search: unfinished trials from their checkpoints")
    resume.add_argument("experiment_dir")
    resume.add_argument("--address", default=None)
    resume.add_argument("--restart-errored", action="store_true", help="run errored trials again from scratch")
    resume.add_argument("--quiet", action="store_true")
    resume.set_defaults(func=_resume)

    best = sub.add_parser("train-best", help="retrain the best trial's config with K seeds and test it")
    best.add_argument("experiment_dir")
    best.add_argument("--epochs", type=int, default=None, help="default: the search's max_t (the same budget)")
    best.add_argument("--seeds", type=int, default=1)
    best.add_argument("--split", default="test")
    best.add_argument("--previews", type=int, default=4)
    best.add_argument("--no-progress", action="store_true")
    best.add_argument("--pick", default=None, metavar="RULE",
                      help="retrain the trial of the Pareto front of the search's objectives that RULE names instead of "
                           "the best by val_s3_cd, e.g. 'min val_s3_cd where val_s3_normal_consistency >= published' "
                           "(results/pareto.py)")
    arms = best.add_mutually_exclusive_group()
    arms.add_argument("--baseline", default=None, metavar="NAME",
                      help="retrain this baseline trial instead (e.g. published), into train_best_NAME/")
    arms.add_argument("--with-baselines", action="store_true",
                      help="retrain the best trial and then every baseline trial, each with the same seeds, so "
                           "that the analysis can compare them with intervals")
    best.set_defaults(func=_train_best)


def demo_config_path() -> str:
    return str(files("search") / "configs" / "demo.yaml")


def _launch(args: argparse.Namespace) -> int:
    import dataclasses

    from results import storage
    from search.config import load_search_config
    from search.run import experiment_dir, launch

    overrides = {}
    if args.name:
        overrides["name"] = args.name
    if args.num_samples is not None:
        overrides["num_samples"] = args.num_samples
    if args.storage_path:
        overrides["storage_path"] = args.storage_path
    if args.smoke_test:
        overrides.setdefault("name", f"smoke-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg = load_search_config(args.config or demo_config_path(), overrides)
    if args.smoke_test:
        cfg = smoke_config(cfg)
        if not args.data:  # beside the experiments, or in this machine's cache when they are on object storage
            args.data = str(_smoke_data(storage.cache_dir(cfg.storage_path, "smoke-data") if storage.is_remote(
                cfg.storage_path) else Path(cfg.storage_path).expanduser() / "smoke-data"))
    if args.data:
        cfg = dataclasses.replace(cfg, base=dataclasses.replace(
            cfg.base, data=dataclasses.replace(cfg.base.data, root=str(Path(args.data).expanduser().resolve()))))
    _check_data(cfg.base.data.root)
    exp = experiment_dir(cfg)
    print(f"search {cfg.name}: {cfg.num_samples} trials, {cfg.scheduler} to {cfg.max_t} epochs, "
          f"{cfg.max_concurrent} at a time; experiment in {exp}")
    launch(cfg, args.address, verbose=0 if args.quiet else 1)
    return _leaderboard(exp)


def smoke_config(cfg):
    """``cfg`` cut to a run of seconds: the tiny profile with its ResNet-18 cut after the second stage (checkpoints
    of about 12 MB, not 182 MB: every epoch writes one, and on object storage uploads it), 2 trials (a baseline and a
    searched point) of 2 epochs of 2 steps, 1 CPU each, validation on 4 views; the space and the scheduler's
    kind are kept."""
    import dataclasses

    from p2m.config import from_dict, profile_config

    epochs = 2
    base = from_dict({"data": {"root": cfg.base.data.root, "val_limit": 4}, "model": {"feature_levels": [1, 2]},
                      "optim": {"steps_per_epoch": 2, "max_epochs": epochs}},
                     base=profile_config("tiny"), source="--smoke-test")
    baselines = dict(list(cfg.baselines.items())[:1])
    return dataclasses.replace(cfg, base=base, num_samples=2, max_concurrent=2, max_t=epochs, grace_period=1,
                               baselines=baselines, cpu=1.0, gpu=0.0)


def _smoke_data(path: Path) -> Path:
    from p2m.data.synth import SynthConfig, generate

    if not (path / "synth_meta.json").is_file():
        generate(SynthConfig(out=str(path), models_per_category=3, views=2, seed=0, workers=1), progress=False)
    return path


def _resume(args: argparse.Namespace) -> int:
    from search.run import resume

    resume(args.experiment_dir, args.address, args.restart_errored, verbose=0 if args.quiet else 1)
    return _leaderboard(args.experiment_dir)


def _train_best(args: argparse.Namespace) -> int:
    import sys

    from search.best import train_best

    from p2m.names import train_best_dir
    from results import storage
    from results.experiment import local_copy
    from results.schema import BASELINE, ERROR, STOP_ERRORED, STOP_REASON, TRIAL_ID
    from results.store import read_trials
    from results.pareto import pick_on_front
    from results.settings import read_settings
    from results.trials import pick_best

    if args.pick and args.baseline:
        raise ValueError("--pick chooses the trial to retrain instead of the best; --baseline names one: give one")
    exp = local_copy(args.experiment_dir)  # on object storage: retrained here, uploaded beside the search
    names = [args.baseline] if args.baseline else [None]
    if args.with_baselines:
        trials = read_trials(exp)
        best = (pick_on_front(trials, args.pick, read_settings(exp).objective_modes()) if args.pick
                else pick_best(trials))[TRIAL_ID]
        for _, row in trials[trials[BASELINE].notna()].drop_duplicates(BASELINE).iterrows():
            if row[STOP_REASON] == STOP_ERRORED:  # it would fail the same way again
                print(f"baseline {row[BASELINE]}: not retrained, it errored in the search ({row[ERROR]})")
            elif row[TRIAL_ID] == best:  # retrained once, as the best
                print(f"baseline {row[BASELINE]}: the best trial itself, retrained as the best")
            else:
                names.append(row[BASELINE])
    for name in names:
        train_best(exp, args.epochs, args.seeds, args.split, args.previews,
                   progress=not args.no_progress and sys.stderr.isatty(), baseline=name,
                   pick=args.pick if name is None else None)
        if storage.is_remote(args.experiment_dir):
            target = storage.join(storage.location(args.experiment_dir), train_best_dir(name))
            storage.upload_dir(exp / train_best_dir(name), target)
            print(f"uploaded to {target}")
    return 0


def _check_data(root: str) -> None:
    from p2m.data.layout import find_samples

    if not root:
        raise ValueError("base.data.root: no dataset given (set it in the config or pass --data)")
    if not find_samples(root, None):
        raise ValueError(f"{root}: no samples found")


def _leaderboard(exp) -> int:
    from results.leaderboard import format_leaderboard
    from results.store import read_trials

    print(format_leaderboard(read_trials(exp)))
    return 0
