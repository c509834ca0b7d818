"""Chamfer distance in the Pixel2Mesh convention: squared distances, averaged in each direction."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from p2m.geometry.knn import nearest_sq_dists, valid_mask


class Chamfer(NamedTuple):
    """Both directions of a chamfer distance, per batch item.

    pred_to_gt: FloatTensor (N,) mean over predicted points of the squared distance to the nearest GT point.
    gt_to_pred: FloatTensor (N,) mean over (valid) GT points of the squared distance to the nearest predicted point.
    pred_nn: LongTensor (N, V) the GT point nearest to each predicted point.
    gt_sq_dists / pred_sq_dists: FloatTensor (N, P) / (N, V) the per-point squared distances.
    """

    pred_to_gt: Tensor
    gt_to_pred: Tensor
    pred_nn: Tensor
    gt_sq_dists: Tensor
    pred_sq_dists: Tensor


def chamfer_distance(pred: Tensor, gt: Tensor, gt_lengths: Tensor | None = None, backend: str = "auto") -> Chamfer:
    """Chamfer distance between predicted points and (possibly padded) ground-truth points.

    Args:
        pred: FloatTensor (N, V, 3) predicted points (mesh vertices or surface samples).
        gt: FloatTensor (N, P, 3) ground-truth points, padded beyond ``gt_lengths``.
        gt_lengths: LongTensor (N,) valid GT points per item (all P when None).
        backend: nearest-neighbour backend, see :func:`p2m.geometry.knn.nearest_indices`.

    Returns:
        :class:`Chamfer`; the P2M chamfer loss of item n is ``gt_to_pred[n] + w * pred_to_gt[n]``
        and the symmetric metric is ``gt_to_pred + pred_to_gt``. Padded GT entries count zero.
    """
    pred_d, pred_nn = nearest_sq_dists(pred, gt, gt_lengths, backend)  # (N, V)
    gt_d, _ = nearest_sq_dists(gt, pred, None, backend)  # (N, P)
    if gt_lengths is None:
        gt_mean = gt_d.mean(-1)
    else:
        gt_d = gt_d * valid_mask(gt_lengths, gt_d.shape[1])
        gt_mean = gt_d.sum(-1) / gt_lengths.to(gt_d.dtype)
    return Chamfer(pred_d.mean(-1), gt_mean, pred_nn, gt_d, pred_d)
