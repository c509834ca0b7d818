"""Finding the samples of a ShapeNet-P2M dataset in either of its two layouts.

- flat (as in the public sample): ``ROOT/<synset>/<model_id>/<view>.{png,dat}``
- original (as the authors distribute it): ``ROOT/<synset>/<model_id>/rendering/<view>.{png,dat}``,
  addressed by file lists ``ROOT/<split>_list.txt`` with one ``.dat`` path per line. A line may
  carry the authors' prefix (``Data/ShapeNetP2M/...``) or be absolute; it is resolved from the first
  path component that is a synset id.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from p2m.data.errors import DataError
from p2m.names import RENDERING_DIR

SPLITS = ("train", "val", "test")

# ShapeNetCore synset ids of the categories Pixel2Mesh is trained on, plus the synthetic ones' kin.
CATEGORY_NAMES = {
    "02691156": "airplane",
    "02828884": "bench",
    "02876657": "bottle",
    "02933112": "cabinet",
    "02958343": "car",
    "03001627": "chair",
    "03211117": "display",
    "03636649": "lamp",
    "03691459": "loudspeaker",
    "04090263": "rifle",
    "04256520": "sofa",
    "04379243": "table",
    "04401088": "telephone",
    "04530566": "watercraft",
}
_SYNSET = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class Sample:
    """One rendered view and its ground truth."""

    dat_path: Path
    image_path: Path
    synset: str
    model_id: str
    view: str

    @property
    def category(self) -> str:
        return CATEGORY_NAMES.get(self.synset, self.synset)


def list_file(root: str | os.PathLike, split: str) -> Path:
    """The file list of ``split`` under ``root`` (``<split>_list.txt``)."""
    return Path(root) / f"{split}_list.txt"


def find_samples(root: str | os.PathLike, split: str | None = None) -> list[Sample]:
    """All samples of ``split`` (from its file list), or of the whole tree when ``split`` is None.

    Raises:
        DataError: the root is missing, a list names a file outside the layout, or nothing is found.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset directory does not exist")
    if split is not None:
        samples = read_list(root, split)
    else:
        dats = sorted(root.glob("*/*/*.dat")) + sorted(root.glob("*/*/rendering/*.dat"))
        samples = [_sample_from_path(p, root) for p in dats if _SYNSET.match(_synset_of(p, root))]
    if not samples:
        raise DataError(root, f"no samples found{f' in split {split!r}' if split else ''} "
                              "(expected <synset>/<model_id>/[rendering/]<view>.dat)")
    return samples


def read_list(root: str | os.PathLike, split: str) -> list[Sample]:
    """The samples named by ``split``'s file list, in file order (empty if the list is empty).

    Raises:
        DataError: the list is missing or a line is not a sample path.
    """
    root = Path(root)
    listing = list_file(root, split)
    if not listing.is_file():
        raise DataError(listing, f"no file list for split '{split}'")
    return [_sample_from_line(root, listing, n, line) for n, line in _lines(listing)]


def available_splits(root: str | os.PathLike) -> list[str]:
    """The splits whose file list exists under ``root``, in train/val/test order."""
    return [s for s in SPLITS if list_file(root, s).is_file()]


def _lines(listing: Path):
    for n, line in enumerate(listing.read_text().splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield n, line


def _sample_from_line(root: Path, listing: Path, lineno: int, line: str) -> Sample:
    parts = Path(line).parts
    starts = [i for i, part in enumerate(parts) if _SYNSET.match(part)]
    if not starts or not line.endswith(".dat"):
        raise DataError(listing, f"line {lineno}: {line!r} is not a <synset>/<model_id>/[rendering/]<view>.dat path")
    path = root.joinpath(*parts[starts[0]:])
    return _sample_from_path(path, root)


def _synset_of(path: Path, root: Path) -> str:
    return path.relative_to(root).parts[0]


def _sample_from_path(dat_path: Path, root: Path) -> Sample:
    rel = dat_path.relative_to(root).parts
    if len(rel) == 4 and rel[2] == RENDERING_DIR:
        synset, model_id = rel[0], rel[1]
    elif len(rel) == 3:
        synset, model_id = rel[0], rel[1]
    else:
        raise DataError(dat_path, "not in a <synset>/<model_id>/[rendering/]<view>.dat layout")
    return Sample(dat_path=dat_path, image_path=dat_path.with_suffix(".png"), synset=synset,
                  model_id=model_id, view=dat_path.stem)
