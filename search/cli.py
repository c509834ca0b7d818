"""``p2m search launch | resume | race | trust | migrate | train-best`` (registered through the ``p2m.commands``
entry point)."""
from __future__ import annotations

import argparse
import sys
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
                             "synthetic dataset made under the storage path (object storage: in each node's "
                             "cache) unless --data is given")
    launch.set_defaults(func=_launch)

    resume = sub.add_parser("resume", help="continue a search: unfinished trials from their checkpoints")
    resume.add_argument("experiment_dir")
    resume.add_argument("--address", default=None)
    resume.add_argument("--restart-errored", action="store_true", help="run errored trials again from scratch")
    resume.add_argument("--quiet", action="store_true")
    resume.set_defaults(func=_resume)

    race = sub.add_parser("race", help="retrain the K best trials and published on fresh seeds, in rounds, dropping "
                                       "those a paired test finds worse, until one is left or the seeds are spent")
    race.add_argument("experiment_dir")
    race.add_argument("--top", type=int, default=3, help="the K best trials of the search (published is added)")
    race.add_argument("--seeds", type=int, default=5, help="at most this many rounds, one fresh seed each")
    race.add_argument("--min-rounds", type=int, default=3, help="no candidate is dropped before this round")
    race.add_argument("--address", default=None, help="Ray cluster: 'auto' or HOST:PORT (default: a new local Ray)")
    race.add_argument("--quiet", action="store_true", help="no per-trial progress table")
    race.set_defaults(func=_race)

    trust = sub.add_parser("trust", help="sign an experiment's Ray state with this machine's restore key, so that "
                                          "resume may read it: only when every writer of the experiment is trusted "
                                          "(docs/security.md)")
    trust.add_argument("experiment_dir")
    trust.set_defaults(func=_trust)

    migrate = sub.add_parser("migrate", help="bring experiments written before their settings and space were strict "
                                             "records (before issue 14) up to date, in place")
    migrate.add_argument("experiment_dirs", nargs="+")
    migrate.set_defaults(func=_migrate)

    best = sub.add_parser("train-best", help="retrain the race's winner (else the best trial) and baselines on fresh "
                                             "seeds, as Ray trials, and test them")
    best.add_argument("experiment_dir")
    best.add_argument("--epochs", type=int, default=None, help="default: the search's max_t (the same budget)")
    best.add_argument("--seeds", type=int, default=5)
    best.add_argument("--first-seed", type=int, default=None,
                      help="the first of the seeds (default: the base seed + 2000); seeds the search or the race used "
                           "are refused")
    best.add_argument("--split", default="test")
    best.add_argument("--previews", type=int, default=2, help="meshes and previews of this many test views per run")
    best.add_argument("--address", default=None, help="Ray cluster: 'auto' or HOST:PORT (default: a new local Ray)")
    best.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no per-trial progress table")
    best.add_argument("--pick", default=None, metavar="RULE",
                      help="retrain the trial of the Pareto front of the search's objectives that RULE names instead of "
                           "the best by val_s3_cd, e.g. 'min val_s3_cd where val_s3_normal_consistency >= published' "
                           "(results/analysis/pareto.py)")
    arms = best.add_mutually_exclusive_group()
    arms.add_argument("--baseline", action="append", default=[], metavar="NAME",
                      help="retrain this baseline trial too, with the same seeds (repeatable; e.g. published)")
    arms.add_argument("--with-baselines", action="store_true",
                      help="retrain every baseline trial too, with the same seeds, so that the analysis can compare "
                           "them with intervals")
    best.set_defaults(func=_train_best)


def demo_config_path() -> str:
    return str(files("search") / "configs" / "demo.yaml")


def _launch(args: argparse.Namespace) -> int:
    import dataclasses

    from search.config import load_search_config
    from search.run import experiment_dir, launch
    from search.smoke import smoke_data

    overrides = {}
    if args.name is not None:
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
        if not args.data:  # the seeded smoke dataset: made here, and by each trial on a node without it
            args.data = str(smoke_data(cfg.storage_path))
            cfg = dataclasses.replace(cfg, base=dataclasses.replace(
                cfg.base, data=dataclasses.replace(cfg.base.data, smoke=True)))
    if args.data:
        cfg = dataclasses.replace(cfg, base=dataclasses.replace(
            cfg.base, data=dataclasses.replace(cfg.base.data, root=str(Path(args.data).expanduser().resolve()))))
    _check_data(cfg.base.data.root)
    exp = experiment_dir(cfg)
    print(f"search {cfg.name}: {cfg.num_samples} trials, {cfg.scheduler} to {cfg.max_t} epochs, "
          f"{cfg.max_concurrent} at a time; experiment in {exp}")
    outcome = launch(cfg, args.address, verbose=0 if args.quiet else 1)
    return _after_search(exp, cfg, outcome, args.address, args.quiet)


def smoke_config(cfg):
    """``cfg`` cut to a run of seconds: the tiny profile with its ResNet-18 cut after the second stage (checkpoints
    of about 12 MB, not 182 MB: every epoch writes one, and on object storage uploads it), 2 trials (a baseline and a
    searched point) of 2 epochs of 2 steps, 1 CPU each, validation on 4 views, no race; the space and the
    scheduler's kind are kept."""
    import dataclasses

    from p2m.config import from_dict, profile_config

    epochs = 2
    base = from_dict({"data": {"root": cfg.base.data.root, "val_limit": 4}, "model": {"feature_levels": [1, 2]},
                      "optim": {"steps_per_epoch": 2, "max_epochs": epochs}},
                     base=profile_config("tiny"), source="--smoke-test")
    baselines = dict(list(cfg.baselines.items())[:1])
    return dataclasses.replace(cfg, base=base, num_samples=2, max_concurrent=2, max_t=epochs, grace_period=1,
                               baselines=baselines, cpu=1.0, gpu=0.0, race_top=0)


def _resume(args: argparse.Namespace) -> int:
    from search.config import load_experiment_config
    from search.run import resume

    from p2m.names import SETTINGS_FILE
    from results import storage

    outcome = resume(args.experiment_dir, args.address, args.restart_errored, verbose=0 if args.quiet else 1)
    cfg = load_experiment_config(storage.join(storage.location(args.experiment_dir), SETTINGS_FILE))
    return _after_search(args.experiment_dir, cfg, outcome, args.address, args.quiet)


def _after_search(experiment_dir, cfg, outcome, address: str | None, quiet: bool) -> int:
    """The leaderboard, and the race the search's config asks for (``race:``), at the end of its launch or
    resume; the exit code: 130 or 143 when interrupted, 1 when too many trials errored (:mod:`search.outcome`)."""
    if outcome.trials:
        _leaderboard(experiment_dir)
    line = outcome.summary(cfg.max_failures, f"p2m search resume {experiment_dir}")
    if line is not None:
        print(line, file=sys.stderr)
        return outcome.exit_code(cfg.max_failures)
    if cfg.race_top:
        _with_ray(address, experiment_dir, "race",
                  lambda: _run_race(experiment_dir, cfg.race_top, cfg.race_seeds, cfg.race_min_rounds, quiet))
    return 0


def _trust(args: argparse.Namespace) -> int:
    from p2m.names import RUNS_DIR
    from results import storage
    from results.lease import Lease
    from search.trust import TUNER_FILE, restore_key, sign_experiment

    exp = _experiment(args.experiment_dir)
    key = restore_key(create=True)
    with Lease(exp, "trust"):
        phases = [storage.join(exp, RUNS_DIR, name) for name in storage.subdirs(storage.join(exp, RUNS_DIR))
                  if storage.is_file(storage.join(exp, RUNS_DIR, name, TUNER_FILE))]
        for ray_experiment in [exp, *phases]:
            print(f"{ray_experiment}: {sign_experiment(ray_experiment, key)} state files signed")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from search.migrate import migrate

    for exp in map(_experiment, args.experiment_dirs):
        for line in migrate(exp) or [f"{exp}: already current"]:
            print(line, flush=True)
    return 0


def _race(args: argparse.Namespace) -> int:
    _with_ray(args.address, args.experiment_dir, "race",
              lambda: _run_race(args.experiment_dir, args.top, args.seeds, args.min_rounds, args.quiet))
    return 0


def _run_race(experiment_dir, top: int, seeds: int, min_rounds: int, quiet: bool) -> None:
    from search.race import race

    race(experiment_dir, top, seeds, min_rounds, verbose=0 if quiet else 1)


def _train_best(args: argparse.Namespace) -> int:
    from results.schema import BASELINE
    from results.parquet import read_trials
    from search.best import train_best

    if args.pick and args.baseline:
        raise ValueError("--pick chooses the trial to retrain instead of the best; --baseline names one: give one")
    baselines = tuple(args.baseline)
    if args.with_baselines:
        baselines = tuple(read_trials(args.experiment_dir)[BASELINE].dropna().drop_duplicates())
    _with_ray(args.address, args.experiment_dir, "train-best",
              lambda: train_best(args.experiment_dir, args.epochs, args.seeds, args.split, args.previews, baselines,
                                 args.pick, args.first_seed, verbose=0 if args.quiet else 1))
    return 0


def _with_ray(address: str | None, experiment_dir, command: str, work) -> None:
    """Run ``work`` under this driver's lease of the experiment, with Ray up (the cluster at ``address``, else a
    new local instance) and able to hold the experiment's trials (:func:`search.run.check_resources`), and shut it
    down after."""
    import ray

    from p2m.names import SETTINGS_FILE
    from results import storage
    from results.lease import Lease
    from search.config import load_experiment_config
    from search.run import check_resources, init_ray

    exp = _experiment(experiment_dir)
    cfg = load_experiment_config(storage.join(exp, SETTINGS_FILE))
    with Lease(exp, command):
        init_ray(address)
        try:
            check_resources(cfg.cpu, cfg.gpu, local=address is None)
            work()
        finally:
            ray.shutdown()


def _experiment(path):
    """``path`` as an experiment's location, once it proves to be one (its settings file is there): a command that
    takes an experiment's lease must not create a directory where none was."""
    from p2m.names import SETTINGS_FILE
    from results import storage

    exp = storage.location(path)
    if not storage.is_file(storage.join(exp, SETTINGS_FILE)):
        raise ValueError(f"{exp}: not an experiment (no {SETTINGS_FILE})")
    return exp


def _check_data(root: str) -> None:
    from p2m.data.layout import find_samples

    if not root:
        raise ValueError("base.data.root: no dataset given (set it in the config or pass --data)")
    if not find_samples(root, None):
        raise ValueError(f"{root}: no samples found")


def _leaderboard(exp) -> int:
    from results.analysis.leaderboard import format_leaderboard
    from results.parquet import read_trials

    print(format_leaderboard(read_trials(exp)))
    return 0
