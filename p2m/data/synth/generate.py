"""``p2m data synth``: a synthetic dataset in exactly the ShapeNet-P2M format.

Each model is a procedural shape (see :mod:`shapes`) normalised as ShapeNet normalises its models
(centred on its bounding box, unit bounding-box diagonal) and scaled by 1 / 1.75 as the Pixel2Mesh
authors did. Each view is a camera pose drawn like the 3D-R2N2 renderings (azimuth, elevation,
distance); the view is ray-cast to an RGBA PNG and the model's surface points and normals are written
in that view's camera frame as a ``.dat`` pickle. Every model draws from its own seeded generator, so
the output is identical for a seed whatever the number of worker processes.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image
from tqdm import tqdm

from p2m.data.camera import CENTER_224, FOCAL_224, SHAPENET_TO_P2M_SCALE, project, world_to_camera
from p2m.atomic import atomic_write_bytes
from p2m.data.datfile import write_dat
from p2m.data.layout import SPLITS, list_file
from p2m.data.synth.render import render_rgba
from p2m.data.synth.shapes import FAMILIES
from p2m.names import LAYOUTS, RENDERING_DIR, SYNTH_META_FILE

# 3D-R2N2's rendering ranges, with distances in Pixel2Mesh camera-frame units (checked against the
# real sample: object centres at 0.6-0.96 from the camera).
AZIMUTH_RANGE_DEG = (0.0, 360.0)
ELEVATION_RANGE_DEG = (25.0, 30.0)
DISTANCE_RANGE = (0.62, 0.95)
POINTS_RANGE = (7500, 9200)  # ground-truth points per model, as in the real files
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)  # train / val / test, by model


@dataclass(frozen=True)
class SynthConfig:
    """What ``p2m data synth`` makes."""

    out: str
    categories: tuple[str, ...] = tuple(FAMILIES)
    models_per_category: int = 10
    views: int = 24
    seed: int = 0
    image_size: int = 137
    supersample: int = 2
    layout: str = RENDERING_DIR  # one of LAYOUTS: the original, with file lists, or "flat" (as the public sample)
    workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, 8))

    def __post_init__(self):
        unknown = [c for c in self.categories if c not in FAMILIES]
        if unknown:
            raise ValueError(f"categories: unknown {unknown}; choose from {sorted(FAMILIES)}")
        for name in ("models_per_category", "views", "image_size", "supersample", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")


@dataclass
class SynthReport:
    samples: int
    models: int
    seconds: float

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


def generate(cfg: SynthConfig, progress: bool = True) -> SynthReport:
    """Write the dataset described by ``cfg`` and return how much was made and how fast.

    It is written into a temporary directory beside ``cfg.out`` and renamed into place at the end, so an
    interrupted run leaves no half dataset at ``cfg.out`` (only a ``.<name>.synth-*`` directory beside it). A
    dataset this function wrote before (it holds ``SYNTH_META_FILE``) is replaced whole, once the new one is complete.

    Raises:
        ValueError: when ``cfg.out`` exists and is neither an empty directory nor a synthetic dataset.
    """
    out = Path(cfg.out)
    previous = out.is_dir() and (out / SYNTH_META_FILE).is_file()
    if out.exists() and not previous and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: already exists and is neither empty nor a synthetic dataset (choose another --out)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.synth-"))
    old = work.with_name(work.name + "-old")
    try:
        report = _generate_into(replace(cfg, out=str(work)), progress)
        meta = {"generator": "p2m data synth", "config": {**asdict(cfg), "categories": list(cfg.categories)},
                "synsets": {c: FAMILIES[c][0] for c in cfg.categories}}
        atomic_write_bytes(work / SYNTH_META_FILE, json.dumps(meta, indent=2).encode())
        os.chmod(work, 0o777 & ~_umask())  # mkdtemp makes 0700
        if previous:
            os.replace(out, old)
        os.replace(work, out)  # onto an empty directory or none
    finally:
        for leftover in (work, old):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return report


def _generate_into(cfg: SynthConfig, progress: bool) -> SynthReport:
    out = Path(cfg.out)
    jobs = [(cfg, category, index) for category in cfg.categories for index in range(cfg.models_per_category)]
    start = time.perf_counter()
    results = []
    bar = tqdm(total=len(jobs) * cfg.views, unit="view", desc="synth", disable=not progress)
    if cfg.workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(cfg.workers) as pool:
            for result in pool.imap_unordered(_make_model, jobs):
                results.append(result)
                bar.update(len(result[2]))
    else:
        for job in jobs:
            results.append(_make_model(job))
            bar.update(len(results[-1][2]))
    bar.close()
    results.sort(key=lambda r: (cfg.categories.index(r[0]), r[1]))
    _write_splits(out, cfg, results)
    return SynthReport(samples=len(jobs) * cfg.views, models=len(jobs), seconds=time.perf_counter() - start)


def build_model(category: str, rng: np.random.Generator) -> tuple[trimesh.Trimesh, np.ndarray, list[trimesh.Trimesh]]:
    """One random model of ``category`` in the Pixel2Mesh object frame.

    Returns:
        (mesh, face_colors, parts): the concatenated mesh, (F, 3) colours, and the watertight parts
        (same transform) used to drop interior surface samples.
    """
    parts = FAMILIES[category][1](rng)
    meshes = [p.mesh for p in parts]
    lo = np.min([m.bounds[0] for m in meshes], axis=0)
    hi = np.max([m.bounds[1] for m in meshes], axis=0)
    scale = SHAPENET_TO_P2M_SCALE / np.linalg.norm(hi - lo)
    transform = np.diag([scale, scale, scale, 1.0])
    transform[:3, 3] = -scale * (lo + hi) / 2
    for m in meshes:
        m.apply_transform(transform)
    mesh = trimesh.util.concatenate(meshes)
    colors = np.concatenate([np.tile(p.color, (len(p.mesh.faces), 1)) for p in parts])
    return mesh, colors, meshes


def sample_surface(mesh: trimesh.Trimesh, parts: list[trimesh.Trimesh], count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``count`` area-uniform points (P, 6) on the visible union of ``parts``: xyz and outward unit normal."""
    face_part = np.repeat(np.arange(len(parts)), [len(p.faces) for p in parts])
    kept = []
    total = 0
    while total < count:
        n = int((count - total) * 1.3) + 64
        faces = rng.choice(len(mesh.faces), size=n, p=mesh.area_faces / mesh.area)
        r1, r2 = rng.random(n), rng.random(n)
        flip = r1 + r2 > 1
        r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
        tri = mesh.triangles[faces]  # (n, 3, 3)
        pts = tri[:, 0] + r1[:, None] * (tri[:, 1] - tri[:, 0]) + r2[:, None] * (tri[:, 2] - tri[:, 0])
        inside = np.zeros(n, dtype=bool)
        for j, part in enumerate(parts):
            other = face_part[faces] != j
            if other.any():
                inside[other] |= part.contains(pts[other])
        keep = ~inside
        kept.append(np.concatenate([pts[keep], mesh.face_normals[faces[keep]]], axis=1))
        total += int(keep.sum())
    return np.concatenate(kept)[:count].astype(np.float32)


def sample_views(rng: np.random.Generator, views: int) -> np.ndarray:
    """(V, 3): azimuth (deg), elevation (deg), distance for each view, drawn as 3D-R2N2 drew them."""
    return np.stack([rng.uniform(*AZIMUTH_RANGE_DEG, views), rng.uniform(*ELEVATION_RANGE_DEG, views),
                     rng.uniform(*DISTANCE_RANGE, views)], axis=1)


def fit_distance(points: np.ndarray, azimuth: float, elevation: float, distance: float, image_size: int,
                 margin_px: float = 2.0) -> float:
    """The smallest distance >= ``distance`` (in 2% steps) at which every point (P, 3) projects inside
    the image with ``margin_px`` to spare, so no object is cut by the frame."""
    normals = np.zeros_like(points)
    for _ in range(200):
        uv = project(world_to_camera(points, normals, azimuth, elevation, distance)[0], image_size)
        if uv.min() >= margin_px and uv.max() <= image_size - 1 - margin_px:
            break
        distance *= 1.02
    return float(distance)


def model_id(seed: int, category: str, index: int) -> str:
    """A ShapeNet-looking 32-hex-digit id, stable for (seed, category, index)."""
    return hashlib.sha1(f"p2m-synth:{seed}:{category}:{index}".encode()).hexdigest()[:32]


def _make_model(job) -> tuple[str, str, list[str]]:
    cfg, category, index = job
    cat_index = list(FAMILIES).index(category)
    rng = np.random.default_rng([cfg.seed, cat_index, index])
    mesh, colors, parts = build_model(category, rng)
    points = sample_surface(mesh, parts, int(rng.integers(POINTS_RANGE[0], POINTS_RANGE[1] + 1)), rng)
    poses = sample_views(rng, cfg.views)
    synset, mid = FAMILIES[category][0], model_id(cfg.seed, category, index)
    folder = Path(cfg.out) / synset / mid
    if cfg.layout == RENDERING_DIR:
        folder = folder / RENDERING_DIR
    rel = []
    for v, (azimuth, elevation, distance) in enumerate(poses):
        distance = poses[v, 2] = fit_distance(points[:, :3], azimuth, elevation, distance, cfg.image_size)
        xyz, nrm = world_to_camera(points[:, :3].astype(np.float64), points[:, 3:].astype(np.float64), azimuth, elevation, distance)
        view_mesh = trimesh.Trimesh(world_to_camera(mesh.vertices, mesh.vertices, azimuth, elevation, distance)[0],
                                    mesh.faces, process=False)
        rgba = render_rgba(view_mesh, colors, cfg.image_size, cfg.supersample)
        name = f"{v:02d}"
        _write_png(folder / f"{name}.png", rgba)
        write_dat(folder / f"{name}.dat", np.concatenate([xyz, nrm], axis=1).astype(np.float32))
        rel.append((folder / f"{name}.dat").relative_to(cfg.out).as_posix())
    if cfg.layout == RENDERING_DIR:  # 3D-R2N2's per-model pose file: azimuth elevation in-plane distance fov
        lines = "".join(f"{a:.6f} {e:.6f} 0 {d:.6f} {_fov_deg():.6f}\n" for a, e, d in poses)
        atomic_write_bytes(folder / "rendering_metadata.txt", lines.encode())
    return category, mid, rel


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fov_deg() -> float:
    return float(np.rad2deg(2 * np.arctan((CENTER_224 + 0.5) / FOCAL_224)))


def _write_png(path: Path, rgba: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _write_splits(out: Path, cfg: SynthConfig, results) -> None:
    """Split each category's models train/val/test (all views of a model together) and write the lists."""
    lists = {s: [] for s in SPLITS}
    for category in cfg.categories:
        models = [r for r in results if r[0] == category]
        order = np.random.default_rng([cfg.seed, 1_000_003, list(FAMILIES).index(category)]).permutation(len(models))
        n = len(models)
        n_val = max(1, round(n * SPLIT_FRACTIONS[1])) if n >= 3 else 0
        n_test = max(1, round(n * SPLIT_FRACTIONS[2])) if n >= 3 else 0
        bounds = {"train": order[: n - n_val - n_test], "val": order[n - n_val - n_test: n - n_test], "test": order[n - n_test:]}
        for split, idx in bounds.items():
            for i in sorted(idx):
                lists[split].extend(models[i][2])
    for split, lines in lists.items():
        atomic_write_bytes(list_file(out, split), "".join(f"{line}\n" for line in lines).encode())
