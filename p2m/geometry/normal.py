"""Normal regularisers."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from p2m.geometry.knn import gather_points
from p2m.geometry.mesh import face_normals


def edge_normal_loss(verts: Tensor, edges: Tensor, gt_normals: Tensor, nearest_gt: Tensor) -> Tensor:
    """Pixel2Mesh's normal loss: an edge should be perpendicular to the GT normal at its first vertex.

    Args:
        verts: FloatTensor (N, V, 3); edges: LongTensor (E, 2).
        gt_normals: FloatTensor (N, P, 3) unit GT normals.
        nearest_gt: LongTensor (N, V) index of the GT point nearest to each vertex.

    Returns:
        FloatTensor (N,): mean over edges of |cos(edge, normal)|.
    """
    normal_at_vertex = gather_points(gt_normals, nearest_gt)  # (N, V, 3)
    n = F.normalize(normal_at_vertex[:, edges[:, 0]], dim=-1, eps=1e-12)  # (N, E, 3)
    e = F.normalize(verts[:, edges[:, 0]] - verts[:, edges[:, 1]], dim=-1, eps=1e-12)
    return (e * n).sum(-1).abs().mean(-1)


def normal_consistency_loss(verts: Tensor, faces: Tensor, face_pairs: Tensor) -> Tensor:
    """The seed paper's form: mean (1 - cos) between the normals of faces that share an edge.

    Args:
        faces: LongTensor (F, 3); face_pairs: LongTensor (A, 2) from :func:`p2m.geometry.mesh.face_adjacency`.

    Returns:
        FloatTensor (N,).
    """
    fn = face_normals(verts, faces)  # (N, F, 3)
    return (1 - (fn[:, face_pairs[:, 0]] * fn[:, face_pairs[:, 1]]).sum(-1)).mean(-1)
