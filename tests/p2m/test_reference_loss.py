"""The `published` loss is Pixel2Mesh's reference loss, term for term.

The reference is noahcao/Pixel2Mesh's ``P2MLoss`` with ``experiments/default/tensorflow.yml`` (the authors'
TensorFlow loss divided by its chamfer factor 3000). It is re-implemented below from its formulas, in
float64, on the authors' own data structures: the template file ``info_ellipsoid.dat`` (its edge rows are
the indices of each level's normalised adjacency, every edge both ways plus one self-loop per vertex; its
Laplacian uses the file's neighbour lists) in the authors' vertex order, and real ``.dat`` point clouds.
p2m builds its own edges, adjacency and vertex order (levels 2 and 3 are numbered differently), so the
test maps vertices between the two orders by their coordinates.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from p2m.config import LossConfig
from p2m.data import load_pickle, read_dat
from p2m.loss import p2m_loss
from p2m.names import STAGES, TERMS, stage_key
from p2m.model import build_template, unpool
from p2m.model.pixel2mesh import LevelGraph, MeshOutput

# experiments/default/tensorflow.yml's loss.weights, and P2MLoss.forward's lap_const
REFERENCE = {"chamfer": 1.0, "chamfer_opposite": 0.55, "edge": 0.1, "laplace": 0.5, "move": 0.033, "normal": 1.6e-4}
LAP_CONST = (0.2, 1.0, 1.0)
RTOL = 1e-5


def reference_terms(info, i: int, before: torch.Tensor, after: torch.Tensor, gt: torch.Tensor,
                    gt_normals: torch.Tensor):
    """The reference's unweighted terms of block i (0-based), batch means, float64.

    before, after: (N, V, 3) in the authors' vertex order; gt, gt_normals: (N, P, 3).
    """
    rows = torch.as_tensor(info[1 + i][1][0].astype(np.int64))  # (2E + V, 2)
    lap_idx = torch.as_tensor(info[7][i].astype(np.int64))  # (V, 10): 8 neighbours (-1 = none), self, count
    # chamfer: exact nearest neighbours each way (float64 KD-trees), distances recomputed on the nearest
    # points so that they carry the gradient, as the reference's chamfer op does
    trees = [(cKDTree(after[n].detach().numpy()), cKDTree(gt[n].numpy())) for n in range(len(gt))]
    nearest = torch.as_tensor(np.stack([t_gt.query(after[n].detach().numpy())[1]
                                        for n, (_, t_gt) in enumerate(trees)]))  # (N, V) GT point nearest a vertex
    nearest_pred = torch.as_tensor(np.stack([t_pred.query(gt[n].numpy())[1] for n, (t_pred, _) in enumerate(trees)]))
    pred_to_gt = ((after - torch.stack([gt[n][nearest[n]] for n in range(len(gt))])) ** 2).sum(-1).mean()
    gt_to_pred = ((gt - torch.stack([after[n][nearest_pred[n]] for n in range(len(gt))])) ** 2).sum(-1).mean()
    # edge: mean squared length over the rows
    vec = after[:, rows[:, 0]] - after[:, rows[:, 1]]  # (N, R, 3)
    edge = (vec ** 2).sum(-1).mean()
    # normal: |cos| between each row's edge and the GT normal nearest its first vertex (unit(0) = 0)
    length = vec.norm(dim=-1, keepdim=True)
    unit_edge = torch.where(length > 0, vec / length.clamp(min=1e-300), torch.zeros_like(vec))
    normal_at = torch.stack([gt_normals[n][nearest[n]] for n in range(len(gt))])[:, rows[:, 0]]
    normal = (unit_edge * normal_at / normal_at.norm(dim=-1, keepdim=True)).sum(-1).abs().mean()

    # Laplacian: change of v - mean of the file's neighbour list, mean over vertices of its squared norm
    def lap(x):
        nbr = lap_idx[:, :8]
        summed = torch.where((nbr >= 0)[None, :, :, None], x[:, nbr.clamp(min=0)], torch.zeros(())).sum(2)
        return x - summed / lap_idx[:, 9].double()[None, :, None]

    laplacian = ((lap(after) - lap(before)) ** 2).sum(-1).mean()
    move = ((after - before) ** 2).sum(-1).mean() if i > 0 else torch.zeros((), dtype=torch.float64)
    return {"gt_to_pred": gt_to_pred, "pred_to_gt": pred_to_gt, "edge": edge, "normal": normal,
            "laplacian": laplacian, "move": move}


def reference_total(terms: list[dict]) -> torch.Tensor:
    w = REFERENCE
    return sum(w["chamfer"] * (t["gt_to_pred"] + w["chamfer_opposite"] * t["pred_to_gt"]) + w["edge"] * t["edge"]
               + w["laplace"] * LAP_CONST[i] * t["laplacian"] + w["move"] * LAP_CONST[i] * t["move"]
               + w["normal"] * t["normal"] for i, t in enumerate(terms))


@pytest.fixture(scope="module")
def case(sample_dir):
    """Perturbed meshes of two real views, in p2m's vertex order and in the authors'."""
    path = sample_dir / "ellipsoid" / "info_ellipsoid.dat"
    info = load_pickle(path)
    template = build_template(str(path))
    levels = [LevelGraph(lv.faces, lv.edges, lv.adjacency, lv.face_pairs) for lv in template.levels]
    # p2m's order -> the authors' order, per level, from the unperturbed vertices' coordinates
    ours, theirs = template.verts.double()[None], info[0].astype(np.float64)
    orders = []
    for level in range(3):
        if level:
            ours = unpool(ours, levels[level - 1].edges)
            pool = info[4][level - 1]
            theirs = np.concatenate([theirs, theirs[pool].mean(1)])
        dist, order = cKDTree(theirs).query(ours[0].numpy())
        assert dist.max() < 1e-6 and len(set(order)) == len(order)
        orders.append(torch.as_tensor(order))
    clouds = [read_dat(p) for p in sorted(sample_dir.glob("02691156/*/00.dat"))[:2]]
    P = min(len(c) for c in clouds)
    gt = np.stack([c[np.random.default_rng(k).choice(len(c), P, replace=False)] for k, c in enumerate(clouds)])
    gen = torch.Generator().manual_seed(0)
    verts = template.verts[None].repeat(2, 1, 1)
    before, after = [], []
    for level in range(3):
        if level:
            verts = unpool(verts, levels[level - 1].edges)
        before.append(verts)
        verts = verts + 0.02 * torch.randn(verts.shape, generator=gen)  # a block's deformation
        after.append(verts)
    return info, levels, orders, before, after, torch.as_tensor(gt[..., :3]), torch.as_tensor(gt[..., 3:])


def test_every_term_and_the_total_equal_the_reference(case):
    info, levels, orders, before, after, gt, gt_normals = case
    leaves = [x.clone().requires_grad_() for x in before + after]
    ours = p2m_loss(LossConfig(), MeshOutput(leaves[3:], leaves[:3]), levels, gt.float(), gt_normals.float())
    ref_leaves = []
    for x, order in zip(leaves, orders + orders):  # the same float32 values, in the authors' order, float64
        y = torch.empty(x.shape, dtype=torch.float64)
        y[:, order] = x.detach().double()
        ref_leaves.append(y.requires_grad_())
    ref = [reference_terms(info, i, ref_leaves[i], ref_leaves[3 + i], gt, gt_normals) for i in range(3)]
    for s, terms in zip(STAGES, ref):
        expected = {"chamfer": terms["gt_to_pred"] + 0.55 * terms["pred_to_gt"], "edge": terms["edge"],
                    "laplacian": terms["laplacian"], "normal": terms["normal"], "move": terms["move"]}
        for term, value in expected.items():
            if term == "move" and s == 1:
                assert LossConfig().weight(1, "move") == 0  # the reference has no move term on block 1
                continue
            assert ours.terms[stage_key(s, term)].item() == pytest.approx(value.item(), rel=RTOL), (s, term)
    # weights as the reference applies them: stage-1 Laplacian 0.5 x 0.2, move 0.033 on blocks 2 and 3
    total = reference_total(ref)
    assert ours.total.item() == pytest.approx(total.item(), rel=RTOL)
    # and the gradients the two send to every block's input and output vertices
    ours.total.backward()
    total.backward()
    for x, y, order in zip(leaves, ref_leaves, orders + orders):
        torch.testing.assert_close(x.grad.double(), y.grad[:, order], rtol=1e-4, atol=1e-9)


def test_published_weights_are_the_reference_config():
    loss = LossConfig()
    for s in STAGES:
        assert loss.weight(s, "chamfer") == REFERENCE["chamfer"]
        assert loss.weight(s, "edge") == REFERENCE["edge"]
        assert loss.weight(s, "normal") == REFERENCE["normal"]
        assert loss.weight(s, "laplacian") == pytest.approx(REFERENCE["laplace"] * LAP_CONST[s - 1])
        assert loss.weight(s, "move") == pytest.approx(REFERENCE["move"] * LAP_CONST[s - 1] * (s > 1))
    assert loss.chamfer_opposite == REFERENCE["chamfer_opposite"]
    assert (loss.edge_form, loss.laplacian_form, loss.normal_form) == ("p2m", "p2m", "p2m")
    assert [loss.pred_samples(s) for s in STAGES] == [0, 0, 0]
    assert len(TERMS) * len(STAGES) == 12
