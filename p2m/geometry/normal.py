"""Normal regularisers."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from p2m.geometry.knn import gather_points
from p2m.geometry.mesh import edge_vectors, face_normals, vertex_normals


def edge_normal_loss(verts: Tensor, edges: Tensor, gt_normals: Tensor, nearest_gt: Tensor) -> Tensor:
    """Pixel2Mesh's normal loss exactly as its reference implementation computes it: an edge should be
    perpendicular to the ground-truth normal near its vertices.

    The reference (the authors' TensorFlow ``mesh_loss`` and noahcao/Pixel2Mesh's ``P2MLoss.normal_loss``)
    runs over the rows of the template's normalised adjacency, every edge in both directions plus one
    self-loop per vertex (2E + V rows); row (a, b) contributes ``|cos(v_a - v_b, n_a)|``, where
    ``n_a`` is the normal of the GT point nearest to vertex a, and a self-loop contributes 0 (its edge
    normalises to the zero vector). So each undirected edge counts once with each endpoint's normal:
    ``sum_e (|cos(e, n_a)| + |cos(e, n_b)|) / (2E + V)``.

    Args:
        verts: FloatTensor (N, V, 3); edges: LongTensor (E, 2) unique undirected edges.
        gt_normals: FloatTensor (N, P, 3) unit GT normals.
        nearest_gt: LongTensor (N, V) index of the GT point nearest to each vertex.

    Returns:
        FloatTensor (N,).
    """
    V, E = verts.shape[1], edges.shape[0]
    normal_at_vertex = F.normalize(gather_points(gt_normals, nearest_gt), dim=-1, eps=1e-12)  # (N, V, 3)
    e = F.normalize(edge_vectors(verts, edges), dim=-1, eps=1e-12)  # (N, E, 3)
    cos_a = (e * normal_at_vertex[:, edges[:, 0]]).sum(-1).abs()  # (N, E)
    cos_b = (e * normal_at_vertex[:, edges[:, 1]]).sum(-1).abs()
    return (cos_a + cos_b).sum(-1) / (2 * E + V)


def normal_consistency_loss(verts: Tensor, faces: Tensor, face_pairs: Tensor) -> Tensor:
    """The seed paper's form: mean (1 - cos) between the normals of faces that share an edge.

    Args:
        faces: LongTensor (F, 3); face_pairs: LongTensor (A, 2) from :func:`p2m.geometry.mesh.face_adjacency`.

    Returns:
        FloatTensor (N,).
    """
    fn = face_normals(verts, faces)  # (N, F, 3)
    return (1 - (fn[:, face_pairs[:, 0]] * fn[:, face_pairs[:, 1]]).sum(-1)).mean(-1)


def vertex_normal_loss(verts: Tensor, faces: Tensor, gt_normals: Tensor, nearest_gt: Tensor) -> Tensor:
    """The seed reimplementation's code: mean over vertices of (1 - cos) between each predicted vertex normal
    (area-weighted, :func:`p2m.geometry.mesh.vertex_normals`) and the normal of the GT point nearest to it.
    Unlike :func:`edge_normal_loss`, orientation counts: a normal pointing inwards costs up to 2.

    Args:
        verts: FloatTensor (N, V, 3); faces: LongTensor (F, 3).
        gt_normals: FloatTensor (N, P, 3) unit GT normals.
        nearest_gt: LongTensor (N, V) index of the GT point nearest to each vertex.

    Returns:
        FloatTensor (N,).
    """
    gt = F.normalize(gather_points(gt_normals, nearest_gt), dim=-1, eps=1e-12)  # (N, V, 3)
    return (1 - (vertex_normals(verts, faces) * gt).sum(-1)).mean(-1)
