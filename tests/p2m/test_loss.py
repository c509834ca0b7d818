"""The composed loss: each of the 12 weights scales exactly its own term, and the terms are the geometry ops."""
import dataclasses
import math
import warnings

import pytest
import torch
import trimesh

from p2m.config import FIXED_WEIGHT_KEYS, WEIGHT_KEYS, LossConfig, profile_config
from p2m.geometry.chamfer import chamfer_distance
from p2m.geometry.edge import p2m_edge_loss
from p2m.geometry.laplacian import laplacian_change_loss, laplacian_smoothing_loss
from p2m.geometry.move import move_loss
from p2m.geometry.normal import edge_normal_loss, normal_consistency_loss
from p2m.geometry.sample import sample_surface_points
from p2m.loss import p2m_loss
from p2m.names import LOSS_TERMS, STAGES, stage_key
from p2m.model import Pixel2Mesh


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = profile_config("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Pixel2Mesh(cfg.model, cfg.data.image_size)
    levels = [model.level(i) for i in range(3)]
    images = torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size)
    gt = torch.randn(2, 400, 3) * 0.15 + torch.tensor([0.0, 0.0, -0.8])
    gtn = torch.nn.functional.normalize(torch.randn(2, 400, 3), dim=-1)
    return model, levels, images, gt, gtn


def test_terms_are_the_geometry_ops(setup):
    model, levels, images, gt, gtn = setup
    out = model(images)
    res = p2m_loss(LossConfig(), out, levels, gt, gtn)
    for s, verts, before, level in zip(STAGES, out.verts, out.before, levels):
        ch = chamfer_distance(verts, gt)
        expected = {
            "chamfer": (ch.gt_to_pred + 0.55 * ch.pred_to_gt).mean(),
            "edge": p2m_edge_loss(verts, level.edges).mean(),
            "laplacian": laplacian_change_loss(before, verts, level.adjacency).mean(),
            "normal": edge_normal_loss(verts, level.edges, gtn, ch.pred_nn).mean(),
            "move": move_loss(before, verts).mean(),
        }
        for t in LOSS_TERMS:
            torch.testing.assert_close(res.terms[stage_key(s, t)], expected[t])
    by_hand = sum(LossConfig().weight(s, t) * res.terms[stage_key(s, t)] for s in STAGES for t in LOSS_TERMS)
    torch.testing.assert_close(res.total, by_hand)


def test_other_forms_are_selected_by_config(setup):
    model, levels, images, gt, gtn = setup
    out = model(images)
    cfg = LossConfig(edge_form="target", edge_target_length=0.02, laplacian_form="smooth", normal_form="consistency")
    res = p2m_loss(cfg, out, levels, gt, gtn)
    v, level = out.verts[2], levels[2]
    lengths = (v[:, level.edges[:, 0]] - v[:, level.edges[:, 1]]).norm(dim=-1)
    torch.testing.assert_close(res.terms["s3_edge"], ((lengths - 0.02) ** 2).mean())
    torch.testing.assert_close(res.terms["s3_laplacian"], laplacian_smoothing_loss(v, level.adjacency).mean())
    torch.testing.assert_close(res.terms["s3_normal"], normal_consistency_loss(v, level.faces, level.face_pairs).mean())


def test_the_seed_code_forms_equal_loops_over_the_mesh(setup):
    """The seed reimplementation's forms against per-vertex and per-edge loops in float64: the mean squared
    edge length (edge_form "target", length 0), the mean squared distance from the neighbours' mean
    ("smooth_sq"), mean (1 - cos) of area-weighted vertex normals and the nearest GT point's normal ("vertex"),
    and the chamfer summed both ways (chamfer_opposite 1)."""
    model, levels, images, gt, gtn = setup
    with torch.no_grad():
        out = model(images)
    cfg = LossConfig(edge_form="target", edge_target_length=0.0, laplacian_form="smooth_sq", normal_form="vertex",
                     chamfer_opposite=1.0)
    res = p2m_loss(cfg, out, levels, gt, gtn)
    v, level = out.verts[1].double(), levels[1]  # stage 2: 2 x 618 vertices
    edges, faces = level.edges.tolist(), level.faces.tolist()
    neighbours = [set() for _ in range(v.shape[1])]
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    edge, lap, normal, cd = [], [], [], []
    for n in range(v.shape[0]):
        edge.append(sum(float((v[n, a] - v[n, b]).pow(2).sum()) for a, b in edges) / len(edges))
        lap.append(sum(float((v[n, i] - v[n, sorted(nb)].mean(0)).pow(2).sum()) for i, nb in enumerate(neighbours))
                   / len(neighbours))
        vn = torch.zeros_like(v[n])
        for f in faces:  # area-weighted: the unnormalised cross product is twice the face's area
            cross = torch.linalg.cross(v[n, f[1]] - v[n, f[0]], v[n, f[2]] - v[n, f[0]])
            for i in f:
                vn[i] += cross
        d = torch.cdist(v[n], gt[n].double()) ** 2  # (V, P) brute force
        nearest = d.argmin(1)
        cos = [float(vn[i] @ gtn[n, nearest[i]].double() / vn[i].norm() / gtn[n, nearest[i]].double().norm())
               for i in range(v.shape[1])]
        normal.append(sum(1 - c for c in cos) / len(cos))
        cd.append(float(d.min(1).values.mean() + d.min(0).values.mean()))
    for term, values in (("edge", edge), ("laplacian", lap), ("normal", normal), ("chamfer", cd)):
        assert float(res.terms[f"s2_{term}"]) == pytest.approx(sum(values) / len(values), rel=1e-4), term

@pytest.mark.parametrize("key", WEIGHT_KEYS + FIXED_WEIGHT_KEYS)
def test_each_weight_moves_the_loss_by_its_own_term(setup, key):
    model, levels, images, gt, gtn = setup
    with torch.no_grad():
        out = model(images)
    base = LossConfig()
    res = p2m_loss(base, out, levels, gt, gtn)
    stage, term = int(key[1]), key.split("_", 1)[1]
    for new in (0.0, 3 * getattr(base, key) + 0.5):
        changed = p2m_loss(dataclasses.replace(base, **{key: new}), out, levels, gt, gtn)
        delta = (new - getattr(base, key)) * res.terms[stage_key(stage, term)]
        torch.testing.assert_close(changed.total - res.total, delta, rtol=1e-4, atol=1e-7)
        for k, v in changed.terms.items():  # the terms themselves do not depend on the weights
            torch.testing.assert_close(v, res.terms[k])
    assert res.terms[stage_key(stage, term)] > 0  # so a weight change does change the loss


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_weight_only_pulls_on_that_stage(setup, stage):
    """With only stage s's edge weight set, the gradient reaches block s (and earlier blocks through it),
    never a later block."""
    model, levels, images, gt, gtn = setup
    only = LossConfig(**{k: float(k == f"w{stage}_edge") for k in WEIGHT_KEYS + FIXED_WEIGHT_KEYS})
    model.zero_grad()
    p2m_loss(only, model(images), levels, gt, gtn).total.backward()
    for i, block in enumerate(model.blocks, start=1):
        grad = sum(float(p.grad.abs().sum()) for p in block.parameters() if p.grad is not None)
        assert (grad > 0) == (i <= stage), (i, grad)


def test_surface_samples_lie_on_the_mesh_and_follow_area():
    mesh = trimesh.creation.box(extents=(1.0, 2.0, 4.0))  # faces of three different areas
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)[None].repeat(2, 1, 1).requires_grad_()
    faces = torch.tensor(mesh.faces)
    g = torch.Generator().manual_seed(0)
    pts, normals = sample_surface_points(verts, faces, 20000, generator=g)
    assert pts.shape == (2, 20000, 3) and normals.shape == (2, 20000, 3)
    half = torch.tensor([0.5, 1.0, 2.0])
    rel = pts[0].detach().abs() / half  # a point on the box's surface has one coordinate at +-half, none beyond
    assert (rel.max(-1).values - 1).abs().max() < 1e-5
    on_axis = torch.nn.functional.one_hot(rel.argmax(-1), 3).float()  # the face it is on
    torch.testing.assert_close(normals[0].abs(), on_axis, atol=1e-5, rtol=0)
    # share of points on the two 2x4 faces is 16 / (2 * (2 + 4 + 8)) = 0.571
    on_big = (pts[0, :, 0].abs() > 0.5 - 1e-5).float().mean().item()
    assert on_big == pytest.approx(16 / 28, abs=0.015)
    pts.sum().backward()
    assert verts.grad is not None and verts.grad.abs().sum() > 0


def test_pred_samples_replace_vertices_in_the_chamfer_term(setup):
    model, levels, images, gt, gtn = setup
    with torch.no_grad():
        out = model(images)
    vertex_cfg = LossConfig()
    sampled_cfg = LossConfig(pred_samples3=5000)
    a = p2m_loss(vertex_cfg, out, levels, gt, gtn)
    b = p2m_loss(sampled_cfg, out, levels, gt, gtn, generator=torch.Generator().manual_seed(1))
    assert a.terms["s1_chamfer"] == b.terms["s1_chamfer"]  # stages without samples are unchanged
    assert a.terms["s3_chamfer"] != b.terms["s3_chamfer"]
    g = torch.Generator().manual_seed(1)
    pts, _ = sample_surface_points(out.verts[2], levels[2].faces, 5000, generator=g)
    ch = chamfer_distance(pts, gt)
    torch.testing.assert_close(b.terms["s3_chamfer"], (ch.gt_to_pred + 0.55 * ch.pred_to_gt).mean())
    for t in ("edge", "laplacian", "normal"):
        torch.testing.assert_close(a.terms[f"s3_{t}"], b.terms[f"s3_{t}"])


def test_learned_weighting_is_kendalls_formula_and_its_log_variances_get_its_gradient(setup):
    """With ``weighting: learned`` the chamfer terms enter as sum_s 0.5 exp(-s_s) L_s + 0.5 s_s (Kendall et al.
    2018, with s = log sigma^2), the other terms at their weights; d total / d s_s = 0.5 - 0.5 exp(-s_s) L_s."""
    from p2m.weighting import LearnedWeights

    model, levels, images, gt, gtn = setup
    with torch.no_grad():
        out = model(images)
    cfg = LossConfig(weighting="learned", w1_chamfer=2.0, w2_chamfer=0.5)
    weights = LearnedWeights(cfg)
    torch.testing.assert_close(weights.weights(), torch.tensor([2.0, 0.5, 1.0]))  # starts at w{s}_chamfer
    with torch.no_grad():
        weights.log_vars.copy_(torch.tensor([0.3, -1.2, 2.0]))
    res = p2m_loss(cfg, out, levels, gt, gtn, log_vars=weights.log_vars)
    static = p2m_loss(LossConfig(), out, levels, gt, gtn)
    s = [0.3, -1.2, 2.0]
    chamfer = [float(res.terms[stage_key(k, "chamfer")]) for k in STAGES]
    by_hand = sum(0.5 * math.exp(-s[i]) * chamfer[i] + 0.5 * s[i] for i in range(3)) + sum(
        LossConfig().weight(k, t) * float(res.terms[stage_key(k, t)]) for k in STAGES for t in LOSS_TERMS if t != "chamfer")
    assert float(res.total.detach()) == pytest.approx(by_hand, rel=1e-5)
    for k, v in res.terms.items():  # the terms are those of the static loss
        torch.testing.assert_close(v, static.terms[k])
    grad, = torch.autograd.grad(res.total, weights.log_vars)
    torch.testing.assert_close(grad, torch.tensor([0.5 - 0.5 * math.exp(-s[i]) * chamfer[i] for i in range(3)]))
    # a step down that gradient moves the total as the formula says (first order)
    eps = 1e-3
    moved = p2m_loss(cfg, out, levels, gt, gtn, log_vars=(weights.log_vars - eps * grad).detach())
    assert float(moved.total) - float(res.total.detach()) == pytest.approx(-eps * float(grad.pow(2).sum()), rel=1e-2)
    with pytest.raises(ValueError, match="weighting 'learned' needs log_vars"):
        p2m_loss(cfg, out, levels, gt, gtn)
    with pytest.raises(ValueError, match="w2_chamfer must be > 0 with weighting 'learned'"):
        LossConfig(weighting="learned", w2_chamfer=0.0)
