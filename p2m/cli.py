"""The ``p2m`` command.

``p2m data ...`` lives here. Other packages add their verbs through the ``p2m.commands`` entry-point
group (a function ``register(subparsers)``), so ``p2m`` never imports them by name and the import
direction search -> p2m stays one way.
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points

from p2m.data.errors import DataError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"p2m: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("p2m: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2m", description="Pixel2Mesh loss-weight search.")
    verbs = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_data_commands(verbs)
    for ep in entry_points(group="p2m.commands"):
        ep.load()(verbs)
    return parser


def _add_data_commands(verbs) -> None:
    from p2m.data.synth.shapes import FAMILIES

    data = verbs.add_parser("data", help="make, check and look at ShapeNet-P2M datasets")
    sub = data.add_subparsers(title="data commands", metavar="COMMAND")
    data.set_defaults(func=lambda _args: data.print_help() or 2)

    synth = sub.add_parser("synth", help="generate a synthetic dataset in the ShapeNet-P2M format")
    synth.add_argument("--out", required=True, help="output dataset directory")
    synth.add_argument("--models-per-category", type=int, default=10)
    synth.add_argument("--views", type=int, default=24, help="views per model (3D-R2N2 has 24)")
    synth.add_argument("--categories", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=137)
    synth.add_argument("--layout", choices=["rendering", "flat"], default="rendering",
                       help="rendering: <synset>/<model>/rendering/<view> with file lists (original); flat: as the public sample")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    synth.set_defaults(func=_synth)

    check = sub.add_parser("check", help="validate a dataset and count samples per category and split")
    check.add_argument("root")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=_check)

    preview = sub.add_parser("preview", help="contact sheet of views with their GT points projected")
    preview.add_argument("root")
    preview.add_argument("--out", required=True, help="output PNG")
    preview.add_argument("--split", default=None, help="train, val or test (default: whole tree)")
    preview.add_argument("--count", type=int, default=24, help="views to draw (spread over the dataset)")
    preview.add_argument("--columns", type=int, default=6)
    preview.set_defaults(func=_preview)


def _synth(args) -> int:
    from p2m.data.synth import SynthConfig, generate

    kwargs = dict(out=args.out, categories=tuple(args.categories), models_per_category=args.models_per_category,
                  views=args.views, seed=args.seed, image_size=args.image_size, layout=args.layout)
    if args.workers is not None:
        kwargs["workers"] = args.workers
    report = generate(SynthConfig(**kwargs))
    print(f"wrote {report.samples} views of {report.models} models to {args.out} "
          f"in {report.seconds:.1f} s ({report.samples_per_second:.1f} views/s)")
    return 0


def _check(args) -> int:
    from p2m.data.check import check_dataset, format_report

    report = check_dataset(args.root)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report))
    for line in report.errors:
        print(f"p2m: error: {line}", file=sys.stderr)
    return 0 if report.ok else 1


def _preview(args) -> int:
    from p2m.data.layout import find_samples
    from p2m.data.preview import contact_sheet

    samples = find_samples(args.root, args.split)
    if args.count < 1:
        raise ValueError(f"--count must be >= 1, got {args.count}")
    step = max(1, len(samples) // args.count)
    out = contact_sheet(samples[::step][: args.count], args.out, columns=args.columns)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
