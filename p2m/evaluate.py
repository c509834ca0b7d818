"""Evaluate a model on a split: per-stage metrics for every view, and their means.

Training validation (:func:`p2m.train.fit`) and ``p2m evaluate`` both go through :func:`evaluate`,
so a number in a results table and a number from the command line are the same computation.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader

from p2m.data.dataset import P2MDataset, collate_p2m
from p2m.data.layout import Sample, find_samples
from p2m.geometry.metrics import mesh_metrics
from p2m.names import METRICS, STAGES, stage_key


class Evaluation(NamedTuple):
    """items: one dict per view (synset, model_id, view, and every ``stage_key(stage, metric)``, e.g. ``s3_cd``);
    means: the mean of each of those over the views."""

    items: list[dict]
    means: dict[str, float]


def split_loader(root, split: str | None, cfg, num_workers: int = 0) -> tuple[list[Sample], DataLoader]:
    """The views of ``split`` (None: every split) of the dataset at ``root`` and a loader over them, batched and
    sampled as ``cfg`` (a :class:`p2m.config.TrainConfig`) trains: what a trained model is tested on.

    Raises:
        ValueError: naming the dataset and the split, when the split has no views.
    """
    samples = find_samples(root, split)
    if not samples:
        raise ValueError(f"{root}: no views in split {split!r}")
    dataset = P2MDataset(samples, cfg.data.gt_samples, cfg.data.image_size)
    return samples, DataLoader(dataset, batch_size=cfg.optim.batch_size, collate_fn=collate_p2m,
                               num_workers=num_workers)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None,
             limit: int = 0) -> Evaluation:
    """Run ``model`` over ``loader`` (batches from :func:`p2m.data.collate_p2m`) against the full GT.

    Args:
        limit: stop after this many views (0 = all).
    """
    was_training = model.training
    model.eval()
    items: list[dict] = []
    try:
        for batch in loader:
            images = batch["images"].to(device, non_blocking=True)
            autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
            with autocast:
                out = model(images)
            gt = batch["points_full_padded"].to(device)
            gt_n = batch["normals_full_padded"].to(device)
            lengths = batch["num_points_full"].to(device)
            per_stage = {}
            for stage, verts in zip(STAGES, out.verts):
                level = model.level(stage - 1)
                m = mesh_metrics(verts.float(), level.faces, level.edges, level.adjacency, gt, gt_n, lengths)
                per_stage.update({stage_key(stage, k): v.cpu() for k, v in m.items()})
            for i in range(images.shape[0]):
                row = {"synset": batch["synset"][i], "model_id": batch["model_id"][i], "view": batch["view"][i]}
                row.update({k: float(v[i]) for k, v in per_stage.items()})
                items.append(row)
            if limit and len(items) >= limit:
                items = items[:limit]
                break
    finally:
        model.train(was_training)
    if not items:
        raise ValueError("evaluate: the loader gave no views")
    keys = [stage_key(s, m) for s in STAGES for m in METRICS]
    means = {k: sum(row[k] for row in items) / len(items) for k in keys}
    return Evaluation(items, means)
