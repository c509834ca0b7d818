"""``p2m results analyze`` (registered through the ``p2m.commands`` entry point; no torch, no Ray)."""
from __future__ import annotations

import argparse


def register(verbs) -> None:
    group = verbs.add_parser("results", help="analyse the Parquet tables of finished or partial searches")
    group.set_defaults(func=lambda _args: group.print_help() or 2)
    sub = group.add_subparsers(title="commands", metavar="COMMAND")
    analyze = sub.add_parser("analyze", help="tables, pictures and report.md of one or several experiments")
    analyze.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR")
    analyze.add_argument("--out", default=None, help="output directory (default: EXPERIMENT_DIR/analysis; "
                                                     "with several, <parent>/comparison-<names>)")
    analyze.add_argument("--format", default=None, choices=("text", "markdown", "csv", "json"),
                         help="also print every table, in this format (by default only the summary is printed; "
                              "the files are always CSV, PNG and report.md)")
    analyze.add_argument("--top", type=int, default=10, help="trials in the leaderboard")
    analyze.add_argument("--no-plots", action="store_true", help="tables and report only")
    analyze.set_defaults(func=_analyze)

    fidelity = sub.add_parser("fidelity", help="does an early epoch rank trials as the last does? (FIFO curves)")
    fidelity.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR",
                          help="one search, or several run alike (their trials pooled; same max_t)")
    fidelity.add_argument("--threshold", type=float, default=0.5, help="the Spearman lower bound a grace rung needs")
    fidelity.add_argument("--boot", type=int, default=2000, help="bootstrap resamples of the trials")
    fidelity.add_argument("--out", default=None, help="where fidelity.csv and fidelity.png go "
                                                      "(default: EXPERIMENT_DIR/analysis)")
    fidelity.set_defaults(func=_fidelity)

    replay = sub.add_parser("replay", help="replay ASHA, successive halving and Hyperband on a FIFO search's curves")
    replay.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR",
                        help="one search, or several run alike (their trials pooled; same max_t)")
    replay.add_argument("--graces", type=int, nargs="+", default=None, help="grace periods (default: 1 .. max_t-1)")
    replay.add_argument("--factors", type=float, nargs="+", default=[2.0, 3.0, 4.0], help="reduction factors")
    replay.add_argument("--orderings", type=int, default=200, help="random trial orderings per setting")
    replay.add_argument("--concurrency", type=int, default=None,
                        help="trials at a time (default: the search's max_concurrent)")
    replay.add_argument("--out", default=None, help="where replay.csv and replay.png go "
                                                    "(default: EXPERIMENT_DIR/analysis)")
    replay.set_defaults(func=_replay)


def _analyze(args: argparse.Namespace) -> int:
    from results.analysis.report import analyze, format_tables, summary_lines

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    analysis = analyze(args.experiments, args.out, args.top, plots_too=not args.no_plots)
    if args.format in (None, "text", "markdown"):
        print("\n".join(summary_lines(analysis)))
    if args.format:
        print(format_tables(analysis.tables, args.format))
    if args.format in (None, "text", "markdown"):
        print(f"report: {analysis.report}" + (f" (uploaded to {analysis.published})" if analysis.published else ""))
    return 0


def _fidelity(args: argparse.Namespace) -> int:
    from results.analysis.fidelity import predictive_grace, rank_fidelity
    from results.analysis.plots import fidelity_curve
    from results.analysis.report import format_tables

    exp, curves = _pooled_curves(args.experiments)
    table = rank_fidelity(curves, n_boot=args.boot)
    out = _out_dir(args.out, exp)
    _write_csv(table, out / "fidelity.csv")
    print(f"{', '.join(args.experiments)}: {len(curves)} trials with all {exp.settings.max_t} epochs "
          f"({exp.settings.scheduler}, lr_schedule {_config(exp, 'optim.lr_schedule')}, "
          f"ema_epochs {_config(exp, 'optim.ema_epochs')}); "
          f"each epoch's ranking against epoch {exp.settings.max_t}'s, 95% bootstrap intervals over trials")
    print(format_tables({"fidelity": table}, "text"))
    _print_reliability(exp)
    grace = predictive_grace(table, args.threshold)
    print(f"earliest epoch whose Spearman lower bound reaches {args.threshold}: "
          + (f"{grace} -> grace_period {grace}" if grace else "none before max_t: no rung predicts, run FIFO"))
    if len(table):
        print(f"wrote {fidelity_curve(table, exp, args.threshold, out / 'fidelity.png')}")
    _publish(out, exp, args.out)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from results.analysis.plots import replay_picture
    from results.analysis.replay import replay
    from results.analysis.report import format_tables

    exp, curves = _pooled_curves(args.experiments)
    if len(curves) < 3:
        raise ValueError(f"{exp.dir}: {len(curves)} trials with full curves; replay needs a FIFO search's")
    graces = args.graces or list(range(1, exp.settings.max_t))
    table = replay(curves, graces, args.factors, args.concurrency or exp.settings.max_concurrent, args.orderings)
    out = _out_dir(args.out, exp)
    _write_csv(table, out / "replay.csv")
    print(f"{', '.join(args.experiments)}: {len(curves)} full curves of {exp.settings.max_t} epochs replayed, "
          f"{args.orderings} random "
          f"orderings per setting, {args.concurrency or exp.settings.max_concurrent} trials at a time")
    print(format_tables({"replay": table}, "text"))
    print(f"wrote {replay_picture(table, exp, out / 'replay.png')}")
    _publish(out, exp, args.out)
    return 0


def _print_reliability(exp) -> None:
    """With per-view validation rows: how reproducible the last epoch's ranking is on this validation set."""
    from results.analysis.fidelity import validation_reliability
    from results.parquet import ResultsError, read_views

    try:
        views = read_views(exp.dir)
    except ResultsError:
        return
    value, models, trials = validation_reliability(views, exp.settings.max_t)
    print(f"validation reliability at epoch {exp.settings.max_t}: {value:.2f} (split-half over {models} validation "
          f"models, Spearman-Brown corrected, {trials} trials): the ceiling of any rung's correlation")


def _pooled_curves(paths: list[str]):
    """The first experiment, and the full curves of every trial of all of them (same max_t); a trial whose
    config and curve repeat one already seen (a baseline every search runs) counts once."""
    import pandas as pd

    from results.analysis.experiment import load_experiment
    from results.analysis.fidelity import full_curves

    experiments = [load_experiment(p) for p in paths]
    first = experiments[0]
    for e in experiments[1:]:
        if e.settings.max_t != first.settings.max_t:
            raise ValueError(f"{e.dir}: max_t {e.settings.max_t} differs from {first.dir}'s {first.settings.max_t}")
    curves = pd.concat([full_curves(e.results, e.settings.max_t).rename(index=lambda t, e=e: f"{e.name}/{t}")
                        for e in experiments])
    return first, curves.drop_duplicates()


def _out_dir(out: str | None, exp):
    from pathlib import Path

    return Path(out) if out else exp.dir / "analysis"


def _publish(out, exp, given_out) -> None:
    """Upload the default output directory of an experiment on object storage beside it."""
    from results.analysis.report import publish

    target = None if given_out else publish(out, exp)
    if target:
        print(f"uploaded {out} to {target}")


def _write_csv(table, path) -> None:
    from p2m.atomic import atomic_write_bytes

    atomic_write_bytes(path, table.to_csv(index=False).encode())


def _config(exp, key: str) -> str:
    from p2m.names import config_column

    column = config_column(key)
    return str(exp.results[column].iloc[0]) if column in exp.results else "not recorded"
