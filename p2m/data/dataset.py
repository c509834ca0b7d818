"""A torch Dataset over ShapeNet-P2M samples, and the collate function that batches them."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from p2m.data.datfile import read_dat
from p2m.data.image import composite_on_white, read_image
from p2m.data.layout import Sample

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class P2MDataset(Dataset):
    """Views and their ground truth, ready for the model.

    Each item is a dict:
        images: FloatTensor (3, H, W): the view composited on white, resized to ``image_size`` and
            normalised with the ImageNet mean and std (the backbone's convention).
        points, normals: FloatTensor (gt_samples, 3): the ground truth resampled to a fixed count
            (without replacement when the file has enough points), so batches stack.
        points_full, normals_full: FloatTensor (P, 3): every ground-truth point, for evaluation.
        synset, model_id, view: str; index: int.

    Resampling is seeded by (``seed``, epoch, index): call :meth:`set_epoch` to draw new points each
    epoch while staying reproducible.
    """

    def __init__(self, samples: Sequence[Sample], gt_samples: int = 9000, image_size: int = 224, seed: int = 0):
        if gt_samples < 1:
            raise ValueError(f"gt_samples must be >= 1, got {gt_samples}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        self.samples = list(samples)
        self.gt_samples = gt_samples
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        gt = torch.from_numpy(read_dat(sample.dat_path))  # (P, 6)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        P = gt.shape[0]
        pick = torch.from_numpy(rng.choice(P, size=self.gt_samples, replace=P < self.gt_samples))
        return {
            "images": prepare_image(read_image(sample.image_path), self.image_size),
            "points": gt[pick, :3],
            "normals": gt[pick, 3:],
            "points_full": gt[:, :3],
            "normals_full": gt[:, 3:],
            "synset": sample.synset,
            "model_id": sample.model_id,
            "view": sample.view,
            "index": index,
        }


def prepare_image(rgba, image_size: int) -> torch.Tensor:
    """The model's input from an RGBA view: composited on white, resized, ImageNet-normalised.

    Args:
        rgba: uint8 array (S, S, 4), as :func:`p2m.data.image.read_image` returns.

    Returns:
        FloatTensor (3, image_size, image_size).
    """
    rgb = torch.from_numpy(composite_on_white(rgba)).permute(2, 0, 1)  # (3, S, S)
    if rgb.shape[-1] != image_size:
        rgb = F.interpolate(rgb[None], size=(image_size, image_size), mode="bilinear",
                            align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (rgb - mean) / std


def collate_p2m(batch: list[dict]) -> dict:
    """Stack a list of items into a batch of N.

    Returns:
        images (N, 3, H, W); points, normals (N, gt_samples, 3); points_full_padded and
        normals_full_padded (N, P_max, 3) zero-padded, with num_points_full (N,) giving each P;
        synset, model_id, view: lists of N str; index: LongTensor (N,).
    """
    if not batch:
        raise ValueError("batch must not be empty")
    lengths = torch.tensor([item["points_full"].shape[0] for item in batch])
    P = int(lengths.max())

    def pad(key):
        out = torch.zeros(len(batch), P, 3)
        for i, item in enumerate(batch):
            out[i, : item[key].shape[0]] = item[key]
        return out

    return {
        "images": torch.stack([item["images"] for item in batch]),
        "points": torch.stack([item["points"] for item in batch]),
        "normals": torch.stack([item["normals"] for item in batch]),
        "points_full_padded": pad("points_full"),
        "normals_full_padded": pad("normals_full"),
        "num_points_full": lengths,
        "synset": [item["synset"] for item in batch],
        "model_id": [item["model_id"] for item in batch],
        "view": [item["view"] for item in batch],
        "index": torch.tensor([item["index"] for item in batch]),
    }
