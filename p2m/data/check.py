"""``p2m data check``: validate every sample of a dataset and count them per split and category."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from p2m.data.datfile import read_dat
from p2m.data.errors import DataError
from p2m.data.image import read_image
from p2m.data.layout import SPLITS, available_splits, find_samples, list_file, read_list
from p2m.names import RENDERING_DIR

POSES_FILE = "rendering_metadata.txt"  # 3D-R2N2's per-model poses in the original layout: one line per view


@dataclass
class CheckReport:
    root: str
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> category -> valid samples
    errors: list[str] = field(default_factory=list)  # one line each, naming the file
    warnings: list[str] = field(default_factory=list)
    points_min: int | None = None
    points_max: int | None = None
    image_sizes: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return {"root": self.root, "ok": self.ok, "counts": self.counts, "errors": self.errors, "warnings": self.warnings,
                "points_per_view": [self.points_min, self.points_max], "image_sizes": self.image_sizes}


def check_dataset(root: str | os.PathLike) -> CheckReport:
    """Read every sample of every split (or of the whole tree when there are no file lists), and check that
    the dataset is complete: a dataset in the original layout (``<model>/rendering/``) has file lists, and each
    model directory has a ``.dat`` beside every view's ``.png`` and as many views as its poses file lists.

    A dataset that cannot be listed at all raises DataError; problems with single samples or models are
    collected in ``CheckReport.errors`` (the first is the one to fix first).
    """
    root = Path(root)
    splits = available_splits(root)
    listed = {split: read_list(root, split) for split in splits} if splits else {"all": find_samples(root)}
    report = CheckReport(root=str(root))
    report.errors.extend(_incomplete(root, splits))
    report.warnings = [f"{root}: split '{split}' is empty" for split, samples in listed.items() if not samples]
    sizes = set()
    checked: dict[Path, bool] = {}
    for split, samples in listed.items():
        counts = Counter()
        for sample in samples:
            if sample.dat_path not in checked:
                checked[sample.dat_path] = _check_sample(sample, report, sizes)
            if checked[sample.dat_path]:
                counts[sample.category] += 1
        report.counts[split] = dict(sorted(counts.items()))
    report.image_sizes = sorted(sizes)
    return report


def format_report(report: CheckReport) -> str:
    """A human-readable table of counts, then the errors."""
    cats = sorted({c for counts in report.counts.values() for c in counts})
    splits = list(report.counts)
    width = max([len("category")] + [len(c) for c in cats])
    lines = [f"dataset {report.root}",
             f"{'category':<{width}} " + " ".join(f"{s:>7}" for s in splits)]
    for c in cats:
        lines.append(f"{c:<{width}} " + " ".join(f"{report.counts[s].get(c, 0):>7}" for s in splits))
    lines.append(f"{'total':<{width}} " + " ".join(f"{sum(report.counts[s].values()):>7}" for s in splits))
    if report.points_min is not None:
        lines.append(f"points per view: {report.points_min}-{report.points_max}; image sizes: {report.image_sizes}")
    lines.extend(f"warning: {w}" for w in report.warnings)
    lines.extend(f"error: {e}" for e in report.errors)
    lines.append(f"{len(report.errors)} problem(s)" if report.errors else "all samples valid")
    return "\n".join(lines)


def _incomplete(root: Path, splits: list[str]) -> list[str]:
    """One line per incomplete part of the tree: no file lists in the original layout, a view without its
    ground truth, a model with fewer views than its poses file lists or with none."""
    problems = []
    models = sorted(p for p in root.glob("*/*") if p.is_dir() and p.parent.name.isdigit() and len(p.parent.name) == 8)
    if not splits and any((m / RENDERING_DIR).is_dir() for m in models):
        names = ", ".join(list_file(root, s).name for s in SPLITS)
        problems.append(f"{root}: no file lists ({names}): a dataset in the original layout is read through them "
                        "(an interrupted `p2m data synth`?)")
    for model in models:
        folder = model / RENDERING_DIR if (model / RENDERING_DIR).is_dir() else model
        dats = {p.stem for p in folder.glob("*.dat")}
        pngs = {p.stem for p in folder.glob("*.png")}
        for view in sorted(pngs - dats):
            problems.append(f"{folder / view}.png: the view has no ground truth ({view}.dat is missing)")
        poses = folder / POSES_FILE
        expected = len([line for line in poses.read_text().splitlines() if line.strip()]) if poses.is_file() else None
        if not dats and not pngs:
            problems.append(f"{folder}: the model has no views")
        elif expected is not None and len(dats) != expected:
            problems.append(f"{folder}: {len(dats)} views, {POSES_FILE} lists {expected} (a half-written model?)")
    return problems


def _check_sample(sample, report: CheckReport, sizes: set) -> bool:
    try:
        points = read_dat(sample.dat_path)
        image = read_image(sample.image_path)
    except DataError as exc:
        report.errors.append(str(exc))
        return False
    n = points.shape[0]
    report.points_min = n if report.points_min is None else min(report.points_min, n)
    report.points_max = n if report.points_max is None else max(report.points_max, n)
    sizes.add(image.shape[0])
    return True
