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

from p2m.atomic import WriteError
from p2m.data.errors import DataError
from p2m.names import EPOCH, LAYOUTS, RENDERING_DIR


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
    except (FloatingPointError, WriteError) as exc:  # p2m.train.NonFiniteLossError; a full disk
        print(f"p2m: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # search.outcome.Interrupted says how to go on and carries 128 + its signal
        print(str(exc) or "p2m: interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p2m", description="Pixel2Mesh loss-weight search.")
    verbs = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_data_commands(verbs)
    _add_model_commands(verbs)
    for ep in entry_points(group="p2m.commands"):
        ep.load()(verbs)
    return parser


def command_group(verbs, name: str, help: str):
    """A verb with sub-verbs (``p2m NAME COMMAND``); alone it prints its help. Returns its subparsers."""
    group = verbs.add_parser(name, help=help)
    group.set_defaults(func=lambda _args: group.print_help() or 2)
    return group.add_subparsers(title=f"{name} commands", metavar="COMMAND")


def _add_data_commands(verbs) -> None:
    from p2m.data.synth.shapes import FAMILIES

    sub = command_group(verbs, "data", "make, check and look at ShapeNet-P2M datasets")

    synth = sub.add_parser("synth", help="generate a synthetic dataset in the ShapeNet-P2M format")
    synth.add_argument("--out", required=True, help="output dataset directory")
    synth.add_argument("--models-per-category", type=int, default=10)
    synth.add_argument("--views", type=int, default=24, help="views per model (3D-R2N2 has 24)")
    synth.add_argument("--categories", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=137)
    synth.add_argument("--layout", choices=LAYOUTS, default=RENDERING_DIR,
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
    if report.errors:  # all of them are in the report above
        more = f" (and {len(report.errors) - 1} more problems)" if len(report.errors) > 1 else ""
        print(f"p2m: error: {report.errors[0]}{more}", file=sys.stderr)
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


def _add_model_commands(verbs) -> None:
    from p2m.config import PROFILES

    train = verbs.add_parser("train", help="train Pixel2Mesh on a dataset; checkpoints, metrics, meshes, previews")
    train.add_argument("--config", help="YAML config (see p2m/config.py); its profile key picks the base")
    train.add_argument("--profile", choices=PROFILES, help="size profile to start from (default: the config's, else paper)")
    train.add_argument("--data", help="dataset directory (sets data.root)")
    train.add_argument("--out", required=True, help="run directory")
    train.add_argument("--epochs", type=int, help="sets optim.max_epochs")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                       help="override one config value, e.g. --set loss.w2_edge=0.3 (repeatable)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--previews", type=int, default=4, help="validation views to export as OBJ + PNG (default 4)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch still)")
    train.set_defaults(func=_train)

    predict = verbs.add_parser("predict", help="reconstruct meshes from images with a trained checkpoint")
    predict.add_argument("--checkpoint", required=True, help="checkpoint file (best.pt, checkpoint.pt) or run directory")
    predict.add_argument("image", help="input view (PNG, RGBA or RGB, square)")
    predict.add_argument("--out", required=True, help="OBJ of the final stage; --all-stages adds _s1/_s2 beside it")
    predict.add_argument("--all-stages", action="store_true")
    predict.add_argument("--preview", help="also write a preview PNG of every stage")
    predict.add_argument("--device", default="cpu")
    predict.set_defaults(func=_predict)

    ev = verbs.add_parser("evaluate", help="per-stage CD, F-scores and normal consistency of a checkpoint on a split")
    ev.add_argument("--checkpoint", required=True)
    ev.add_argument("--data", required=True, help="dataset directory (synthetic, ShapeNet-P2M, or the real sample)")
    ev.add_argument("--split", default="test", help="split to evaluate, or 'all' for every view (default: test)")
    ev.add_argument("--out", help="CSV with one row per view")
    ev.add_argument("--limit", type=int, default=0, help="evaluate at most this many views")
    ev.add_argument("--json", action="store_true", help="print the means as JSON")
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=_evaluate)


def _train(args) -> int:
    from pathlib import Path

    from p2m import train
    from p2m.config import TrainConfig, apply_overrides, from_dict, load_config, profile_config
    from p2m.names import RUN_CONFIG_FILE, STAGES, val_column

    if args.resume:  # the run's own config; only what --resume may change is taken from the arguments
        if args.config or args.profile:
            raise ValueError("--resume takes the run's saved config: drop --config/--profile")
        cfg = load_config(Path(args.out) / RUN_CONFIG_FILE, base=TrainConfig())
    else:
        base = profile_config(args.profile) if args.profile else None
        cfg = load_config(args.config, base) if args.config else (base or from_dict({}))
    extra = list(args.overrides)
    if args.data:
        extra.append(f"data.root={args.data}")
    if args.epochs is not None:
        extra.append(f"optim.max_epochs={args.epochs}")
    cfg = apply_overrides(cfg, extra)
    result = train.run_training(cfg, args.out, resume=args.resume, previews=args.previews,
                                progress=not args.no_progress and sys.stderr.isatty())
    best = result.best
    print(f"best epoch {best[EPOCH]}: val CDx1000 s1/s2/s3 "
          + " / ".join(f"{best[val_column(s, 'cd_x1000')]:.3f}" for s in STAGES) + f"; run in {result.out_dir}")
    return 0


def _predict(args) -> int:
    from pathlib import Path

    import numpy as np

    from p2m.checkpoint import load_model
    from p2m.data.image import read_image
    from p2m.predict import predict_image, stage_faces, write_stage_objs
    from p2m.render import preview_png, write_obj
    from p2m.train import resolve_device

    out = Path(args.out)
    if out.suffix.lower() != ".obj":
        raise ValueError(f"--out {out}: expected a .obj path")
    model, cfg = load_model(args.checkpoint, resolve_device(args.device))
    rgba = read_image(args.image)
    verts, faces = predict_image(model, cfg, rgba), stage_faces(model)
    if not all(np.isfinite(v).all() for v in verts):
        raise ValueError(f"{args.checkpoint}: predicted NaN or infinite vertices for {args.image}; nothing written")
    write_obj(out, verts[-1], faces[-1])
    print(f"wrote {out} ({len(verts[-1])} vertices, {len(faces[-1])} faces)")
    if args.all_stages:
        for path in write_stage_objs(out.with_suffix(""), verts, faces)[:-1]:
            print(f"wrote {path}")
    if args.preview:
        print(f"wrote {preview_png(args.preview, rgba, verts, faces, title=Path(args.image).name)}")
    return 0


def _evaluate(args) -> int:
    import csv
    import io

    from p2m.atomic import atomic_write_bytes
    from p2m.checkpoint import load_model
    from p2m.evaluate import evaluate, split_loader
    from p2m.names import STAGES, stage_key
    from p2m.train import resolve_device

    device = resolve_device(args.device)
    model, cfg = load_model(args.checkpoint, device)
    _, loader = split_loader(args.data, None if args.split == "all" else args.split, cfg, cfg.data.num_workers)
    result = evaluate(model, loader, device, limit=args.limit)
    if args.out:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(result.items[0]))
        writer.writeheader()
        writer.writerows(result.items)
        atomic_write_bytes(args.out, buf.getvalue().encode())
    if args.json:
        print(json.dumps({"views": len(result.items), **result.means}, indent=2))
        return 0
    print(f"{len(result.items)} views of {args.data} ({args.split})")
    print(f"{'stage':>5} {'CDx1000':>9} {'F@tau':>7} {'F@2tau':>7} {'normal':>7}")
    for s in STAGES:
        m = {k: result.means[stage_key(s, k)] for k in ("cd_x1000", "f_tau", "f_2tau", "normal_consistency")}
        print(f"{s:>5} {m['cd_x1000']:>9.3f} {m['f_tau']:>7.2f} {m['f_2tau']:>7.2f} {m['normal_consistency']:>7.3f}")
    if args.out:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
