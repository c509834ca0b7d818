"""Evaluation metrics of a predicted mesh against the full ground truth (the Pixel2Mesh protocol).

- chamfer distance: squared distances, mean in each direction, summed (also reported x1000);
- F-score at tau and 2 tau on squared distances (tau = 1e-4, as the Pixel2Mesh paper);
- normal consistency: mean |cos| between each predicted vertex normal and the normal of its nearest
  GT point;
- smoothness: mean |Laplacian coordinate| divided by the mean edge length (scale-free; 0 for a
  flat mesh, larger for a crumpled one).

Training validation and ``p2m evaluate`` both call :func:`mesh_metrics`.
"""
from __future__ import annotations

import torch
from torch import Tensor

from p2m.geometry.chamfer import chamfer_distance
from p2m.geometry.knn import gather_points, valid_mask
from p2m.geometry.laplacian import laplacian_coords
from p2m.geometry.mesh import edge_vectors, vertex_normals

F_SCORE_TAU = 1e-4


@torch.no_grad()
def mesh_metrics(verts: Tensor, faces: Tensor, edges: Tensor, adjacency: Tensor,
                 gt_points: Tensor, gt_normals: Tensor, gt_lengths: Tensor | None = None,
                 tau: float = F_SCORE_TAU, backend: str = "auto") -> dict[str, Tensor]:
    """Per-item metrics of one stage.

    Args:
        verts: FloatTensor (N, V, 3) predicted vertices; faces (F, 3), edges (E, 2),
            adjacency (V, V) sparse from :func:`p2m.geometry.mesh.mean_adjacency`.
        gt_points, gt_normals: FloatTensor (N, P, 3), padded beyond ``gt_lengths`` (N,).

    Returns:
        dict of FloatTensor (N,): cd, cd_x1000, cd_pred_to_gt, cd_gt_to_pred, f_tau, f_2tau,
        normal_consistency, smoothness.
    """
    verts, gt_points, gt_normals = verts.float(), gt_points.float(), gt_normals.float()
    ch = chamfer_distance(verts, gt_points, gt_lengths, backend)
    N, P, _ = gt_points.shape
    valid = torch.ones(N, P, dtype=torch.bool, device=verts.device) if gt_lengths is None else \
        valid_mask(gt_lengths, P)
    out = {"cd_pred_to_gt": ch.pred_to_gt, "cd_gt_to_pred": ch.gt_to_pred}
    out["cd"] = ch.pred_to_gt + ch.gt_to_pred
    out["cd_x1000"] = out["cd"] * 1000.0
    out["f_tau"] = f_score(ch.pred_sq_dists, ch.gt_sq_dists, valid, tau)
    out["f_2tau"] = f_score(ch.pred_sq_dists, ch.gt_sq_dists, valid, 2 * tau)
    vn = vertex_normals(verts, faces)
    out["normal_consistency"] = (vn * gather_points(gt_normals, ch.pred_nn)).sum(-1).abs().mean(-1)
    edge_len = edge_vectors(verts, edges).norm(dim=-1).mean(-1)
    lap = laplacian_coords(verts, adjacency).norm(dim=-1).mean(-1)
    out["smoothness"] = lap / edge_len.clamp(min=1e-12)
    return out


def f_score(pred_sq_dists: Tensor, gt_sq_dists: Tensor, gt_valid: Tensor, threshold: float) -> Tensor:
    """F-score (in %) at a squared-distance threshold.

    Args:
        pred_sq_dists: (N, V) squared distance of each prediction to the nearest GT point.
        gt_sq_dists: (N, P) squared distance of each GT point to the nearest prediction.
        gt_valid: BoolTensor (N, P) real (not padded) GT points.

    Returns:
        FloatTensor (N,): 100 * 2 p r / (p + r), 0 where p + r = 0.
    """
    precision = (pred_sq_dists < threshold).float().mean(-1)
    recall = ((gt_sq_dists < threshold) & gt_valid).float().sum(-1) / gt_valid.float().sum(-1)
    denom = precision + recall
    return torch.where(denom > 0, 200.0 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(denom))
