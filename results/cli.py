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


def _analyze(args: argparse.Namespace) -> int:
    from results.report import analyze, format_tables, summary_lines

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    analysis = analyze(args.experiments, args.out, args.top, plots_too=not args.no_plots)
    if args.format in (None, "text", "markdown"):
        print("\n".join(summary_lines(analysis)))
    if args.format:
        print(format_tables(analysis.tables, args.format))
    if args.format in (None, "text", "markdown"):
        print(f"report: {analysis.report}")
    return 0
