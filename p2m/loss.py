"""The training loss: Σ_s Σ_t w[s][t] · L_t(stage s), with the 12 weights a search tunes and the move term.

Terms (Pixel2Mesh, Wang et al. 2018, Sec. 3.5, in the forms of ``LossConfig``). With the "p2m" forms and
``LossConfig``'s default weights the total equals the reference implementation's loss (noahcao/Pixel2Mesh
``P2MLoss``, the authors' TensorFlow loss normalised by its chamfer factor), term for term:
- chamfer: ``gt_to_pred + chamfer_opposite * pred_to_gt`` against the GT points of the batch,
  measured at the mesh vertices (``pred_samples{s} = 0``, as Pixel2Mesh) or at points sampled on the
  predicted surface (``> 0``, as Mesh R-CNN);
- edge: squared edge length over the reference's rows ("p2m", :func:`p2m_edge_loss`) or squared
  deviation from a target length ("target"; with length 0, the mean squared edge length);
- laplacian: change of the Laplacian coordinates through the block ("p2m"), plain smoothness mean |delta|
  ("smooth") or mean |delta|^2 ("smooth_sq");
- normal: |cos| between each edge and the GT normal nearest each of its vertices ("p2m"),
  adjacent-face normal consistency ("consistency") or 1 - cos between each vertex normal and the
  nearest GT normal ("vertex");
- move: mean squared displacement of the vertices through the block (weights ``w{s}_move``, which
  the default search space leaves at the reference's values: 0 on block 1, 0.033 on blocks 2 and 3).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from p2m.config import LossConfig
from p2m.geometry.chamfer import chamfer_distance
from p2m.geometry.edge import edge_target_loss, p2m_edge_loss
from p2m.geometry.knn import nearest_indices
from p2m.geometry.laplacian import laplacian_change_loss, laplacian_smoothing_loss
from p2m.geometry.move import move_loss
from p2m.geometry.normal import edge_normal_loss, normal_consistency_loss, vertex_normal_loss
from p2m.geometry.sample import sample_surface_points
from p2m.model.pixel2mesh import LevelGraph, MeshOutput
from p2m.names import FORM_P2M, LAPLACIAN_SMOOTH_SQ, LOSS_TERMS, NORMAL_VERTEX, STAGES, stage_key
from p2m.weighting import uncertainty_weighted


class LossResult(NamedTuple):
    """total: scalar, the weighted sum (batch mean); terms: {``stage_key(stage, term)``: scalar}, unweighted."""

    total: Tensor
    terms: dict[str, Tensor]


def p2m_loss(cfg: LossConfig, out: MeshOutput, levels: list[LevelGraph], gt_points: Tensor, gt_normals: Tensor,
             generator: torch.Generator | None = None, log_vars: Tensor | None = None) -> LossResult:
    """The weighted loss of one batch.

    Args:
        cfg: the weights and the forms of the terms.
        out: the model's output (vertices after and before each block, float32 or autocast dtype).
        levels: connectivity of the three template levels.
        gt_points, gt_normals: FloatTensor (N, P, 3), P = ``data.gt_samples``.
        generator: for the surface samples when ``pred_samples > 0``.
        log_vars: FloatTensor (3,), the chamfer log-variances of ``cfg.weighting == "learned"``
            (:class:`p2m.weighting.LearnedWeights`): the chamfer terms then enter as
            :func:`p2m.weighting.uncertainty_weighted` in place of ``w{s}_chamfer``.

    Returns:
        :class:`LossResult`. A term whose weight is 0 is still computed (and reported) but adds
        nothing to the gradient's graph beyond a zero.
    """
    learned = cfg.weighting == "learned"
    if learned and (log_vars is None or log_vars.shape != (len(STAGES),)):
        raise ValueError(f"weighting 'learned' needs log_vars of shape (3,), got "
                         f"{None if log_vars is None else tuple(log_vars.shape)}")
    gt_points, gt_normals = gt_points.float(), gt_normals.float()
    terms: dict[str, Tensor] = {}
    total = gt_points.new_zeros(())
    for stage, verts, before, level in zip(STAGES, out.verts, out.before, levels):
        verts, before = verts.float(), before.float()
        values = _stage_terms(cfg, stage, verts, before, level, gt_points, gt_normals, generator)
        for term in LOSS_TERMS:
            value = values[term].mean()
            terms[stage_key(stage, term)] = value
            if not (learned and term == "chamfer"):
                total = total + cfg.weight(stage, term) * value
    if learned:
        chamfers = torch.stack([terms[stage_key(s, "chamfer")] for s in STAGES])
        total = total + uncertainty_weighted(chamfers, log_vars.float())
    return LossResult(total, terms)


def _stage_terms(cfg: LossConfig, stage: int, verts: Tensor, before: Tensor, level: LevelGraph, gt_points: Tensor,
                 gt_normals: Tensor, generator) -> dict[str, Tensor]:
    num_samples = cfg.pred_samples(stage)
    if num_samples > 0:
        pred, _ = sample_surface_points(verts, level.faces, num_samples, generator)
        ch = chamfer_distance(pred, gt_points)
        nearest_gt = nearest_indices(verts, gt_points) if cfg.normal_form in (FORM_P2M, NORMAL_VERTEX) else None
    else:
        ch = chamfer_distance(verts, gt_points)
        nearest_gt = ch.pred_nn
    out = {"chamfer": ch.gt_to_pred + cfg.chamfer_opposite * ch.pred_to_gt}
    if cfg.edge_form == FORM_P2M:
        out["edge"] = p2m_edge_loss(verts, level.edges)
    else:
        out["edge"] = edge_target_loss(verts, level.edges, cfg.edge_target_length)
    if cfg.laplacian_form == FORM_P2M:
        out["laplacian"] = laplacian_change_loss(before, verts, level.adjacency)
    else:
        out["laplacian"] = laplacian_smoothing_loss(verts, level.adjacency, squared=cfg.laplacian_form == LAPLACIAN_SMOOTH_SQ)
    if cfg.normal_form == FORM_P2M:
        out["normal"] = edge_normal_loss(verts, level.edges, gt_normals, nearest_gt)
    elif cfg.normal_form == NORMAL_VERTEX:
        out["normal"] = vertex_normal_loss(verts, level.faces, gt_normals, nearest_gt)
    else:
        out["normal"] = normal_consistency_loss(verts, level.faces, level.face_pairs)
    out["move"] = move_loss(before, verts)
    return out
