"""``p2m data check``: validate every sample of a dataset and count them per split and category."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from p2m.data.datfile import read_dat
from p2m.data.errors import DataError
from p2m.data.image import read_image
from p2m.data.layout import available_splits, find_samples, read_list


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
    """Read every sample of every split (or of the whole tree when there are no file lists).

    A dataset that cannot be listed at all raises DataError; problems with single samples are
    collected in ``CheckReport.errors``.
    """
    root = Path(root)
    splits = available_splits(root)
    listed = {split: read_list(root, split) for split in splits} if splits else {"all": find_samples(root)}
    report = CheckReport(root=str(root))
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
    lines.append(f"{len(report.errors)} problem(s)" if report.errors else "all samples valid")
    return "\n".join(lines)


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
