import warnings

import pytest
import torch

from p2m.config import profile_config
from p2m.data.camera import project
from p2m.geometry import chamfer_distance
from p2m.geometry.mesh import mean_adjacency
from p2m.model import Pixel2Mesh
from p2m.model.gcn import GraphConv, neighbour_bags
from p2m.model.pooling import pool_features


def _tiny_model():
    cfg = profile_config("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Pixel2Mesh(cfg.model, cfg.data.image_size), cfg


def test_every_parameter_gets_a_gradient_after_one_step():
    torch.manual_seed(0)
    model, cfg = _tiny_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # created after the model: every layer is in it
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    images = torch.randn(2, 3, cfg.data.image_size, cfg.data.image_size)
    gt = torch.randn(2, 500, 3) * 0.1 + torch.tensor([0.0, 0.0, -0.8])
    out = model(images)
    assert [v.shape for v in out.verts] == [(2, 162, 3), (2, 642, 3), (2, 2562, 3)]
    loss = sum(chamfer_distance(v, gt).gt_to_pred.mean() for v in out.verts)
    opt.zero_grad()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not no_grad
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_batch_items_are_independent():
    torch.manual_seed(1)
    model, cfg = _tiny_model()
    model.eval()
    images = torch.randn(3, 3, cfg.data.image_size, cfg.data.image_size)
    batched = model(images).verts[2]
    single = model(images[1:2]).verts[2]
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-5)


def test_pooling_reads_the_pixel_a_vertex_projects_to():
    S = 32
    fmap = torch.arange(S * S, dtype=torch.float32).view(1, 1, S, S)
    # points that project exactly onto pixel centres (row 5, col 9) and (row 20, col 3)
    uv = torch.tensor([[9.0, 5.0], [3.0, 20.0]])
    from p2m.data.camera import intrinsics

    f, c = intrinsics(S)
    z = -0.8
    verts = torch.stack([(uv[:, 0] - c) / f * -z, (uv[:, 1] - c) / f * z, torch.full((2,), z)], dim=1)[None]
    torch.testing.assert_close(project(verts, S)[0], uv)
    pooled = pool_features([fmap], verts, S)
    torch.testing.assert_close(pooled[0, :, 0], torch.tensor([5 * S + 9.0, 20 * S + 3.0]))


@pytest.mark.parametrize("combine", ["cat", "sum"])
def test_pooling_equals_grid_sample_with_gradients(combine):
    """The embedding-bag sampling is grid_sample's (bilinear, zero padding, align_corners=False): values
    and gradients to the maps and the vertices, in float64, with a third of the points partly or wholly
    off the image and some exactly on pixel centres."""
    import torch.nn.functional as F

    torch.manual_seed(4)
    S = 96
    maps = [torch.randn(3, 5, s, s, dtype=torch.float64, requires_grad=True) for s in (24, 12, 6, 3)]
    verts = torch.randn(3, 400, 3, dtype=torch.float64) * 0.25 + torch.tensor([0.0, 0.0, -0.8], dtype=torch.float64)
    verts[:, :20, 2] = -0.8
    verts[:, :20, :2] = torch.randint(-40, 40, (3, 20, 2), dtype=torch.float64) / 100  # some on pixel centres
    verts.requires_grad_()
    uv = project(verts, S)
    assert 0.2 < ((uv < -0.5) | (uv > S - 0.5)).any(-1).double().mean() < 0.5
    grid = ((uv + 0.5) / S * 2 - 1)[:, :, None, :]
    sampled = [F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[..., 0].transpose(1, 2)
               for m in maps]
    expected = torch.cat(sampled, dim=-1) if combine == "cat" else sum(sampled)
    got = pool_features(maps, verts, S, combine)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(expected)
    for a, b in zip(torch.autograd.grad((got * g).sum(), maps + [verts]),
                    torch.autograd.grad((expected * g).sum(), maps + [verts])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)



@pytest.mark.parametrize("wrt", ["table", "weight", "both"])
def test_weighted_bags_backward_against_finite_differences(wrt):
    """The sampler's own backward (the table's gradient as transposed bags), alone and with the weights',
    against finite differences in float64; rows no tap reads get zeros, repeated taps of a row add up."""
    from p2m.model.pooling import _WeightedBags

    torch.manual_seed(6)
    index = torch.randint(0, 9, (7, 4))
    index[0] = 3  # one bag reading the same row four times
    table = torch.randn(12, 5, dtype=torch.float64, requires_grad=wrt in ("table", "both"))  # rows 9-11 never read
    weight = torch.rand(7, 4, dtype=torch.float64, requires_grad=wrt in ("weight", "both"))
    assert torch.autograd.gradcheck(lambda t, w: _WeightedBags.apply(index, t, w), (table, weight))
    if table.requires_grad:
        grad, = torch.autograd.grad(_WeightedBags.apply(index, table, weight).sum(), table)
        assert grad[9:].eq(0).all()

def test_pooling_gives_zeros_for_non_finite_points_and_keeps_the_others():
    """A vertex at NaN or infinity samples zeros (as grid_sample's zero padding does off the image) and
    leaves the other vertices' features and the maps' gradient finite."""
    torch.manual_seed(5)
    S = 64
    maps = [torch.randn(2, 4, s, s, requires_grad=True) for s in (16, 8)]
    verts = torch.randn(2, 30, 3) * 0.2 + torch.tensor([0.0, 0.0, -0.8])
    verts[0, 0, 0], verts[1, 3, 1], verts[1, 5, 0] = float("nan"), float("inf"), float("-inf")
    clean = verts.clone()
    clean[0, 0], clean[1, 3], clean[1, 5] = 0.0, 0.0, 1.0  # any finite point: only the others are compared
    got = pool_features(maps, verts, S)
    assert got[0, 0].eq(0).all() and got[1, 3].eq(0).all() and got[1, 5].eq(0).all()
    keep = torch.ones(2, 30, dtype=torch.bool)
    keep[0, 0] = keep[1, 3] = keep[1, 5] = False
    torch.testing.assert_close(got[keep], pool_features(maps, clean, S)[keep])
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(got.sum(), maps))


def test_graph_conv_by_loops():
    """On vertex-major features (V, N, C), with and without leading channels already weighted."""
    torch.manual_seed(2)
    conv = GraphConv(4, 3)
    x = torch.randn(3, 2, 4)  # 3 vertices, 2 items
    adjacency = mean_adjacency(torch.tensor([[0, 1], [0, 2]]), 3)  # vertex 0 joins 1 and 2
    ref = torch.stack([conv.w_self(x[0]) + conv.w_nbr((x[1] + x[2]) / 2),
                       conv.w_self(x[1]) + conv.w_nbr(x[0]),
                       conv.w_self(x[2]) + conv.w_nbr(x[0])])
    applied = x[..., :1] @ conv.leading_weights(1).T  # the first channel's part, weighted beforehand
    for graph in (adjacency, neighbour_bags(adjacency, 2)):
        torch.testing.assert_close(conv(x, graph), ref)
        torch.testing.assert_close(conv(x[..., 1:], graph, applied), ref)


def test_neighbour_bags_forward_and_backward():
    """The bags' self-plus-neighbour-mean against the dense adjacency on a graph with a vertex of no
    neighbours (its mean is 0), and its backward against finite differences (float64)."""
    from p2m.model.gcn import _SelfPlusNeighbourMean

    torch.manual_seed(3)
    edges = torch.tensor([[0, 1], [0, 2], [1, 2], [2, 3], [0, 4]])  # vertex 5 has no neighbours
    adjacency = mean_adjacency(edges, 6).to(torch.float64)
    bags = neighbour_bags(adjacency, 3)
    both = torch.randn(6, 3, 4, dtype=torch.float64, requires_grad=True)
    dense = adjacency.to_dense()
    ref = both[..., :2] + torch.einsum("ij,jnc->inc", dense, both[..., 2:])
    torch.testing.assert_close(_SelfPlusNeighbourMean.apply(both, bags), ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda b: _SelfPlusNeighbourMean.apply(b, bags), (both,))


def test_backbone_warns_without_weights_and_refuses_wrong_weights(tmp_path):
    from p2m.model.backbone import ResNet18Features

    with pytest.warns(UserWarning, match="no pretrained weights"):
        ResNet18Features()
    import torchvision

    good = {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()}
    wrong_shape = {**good, "conv1.weight": torch.zeros(64, 3, 3, 3)}
    cases = {"shape.pt": (wrong_shape, r"shape.pt: not ResNet-18 weights \(wrong shapes: conv1.weight \(64, 3, 3, 3\)"),
             "partial.pt": ({"conv1.weight": good["conv1.weight"]}, r"partial.pt: not ResNet-18 weights \(missing bn1"),
             "list.pt": ([1, 2], r"list.pt: not a state dict")}
    for name, (state, message) in cases.items():
        torch.save(state, tmp_path / name)
        with pytest.raises(ValueError, match=message) as err:
            ResNet18Features(tmp_path / name)
        assert "\n" not in str(err.value)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt: not a readable weights file"):
        ResNet18Features(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="nowhere.pt: backbone weights not found"):
        ResNet18Features(tmp_path / "nowhere.pt")


def test_backbone_loads_local_weights(tmp_path):
    import torchvision

    from p2m.model.backbone import ResNet18Features

    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    enc = ResNet18Features(path)
    torch.testing.assert_close(enc.stem[0].weight, ref.conv1.weight)
    torch.testing.assert_close(enc.stages[3][1].conv2.weight, ref.layer4[1].conv2.weight)


def test_projecting_maps_before_pooling_equals_projecting_pooled_features():
    """The model's 1x1 projection before sampling is the same linear map applied after sampling."""
    torch.manual_seed(3)
    S = 32
    maps = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    convs = [torch.nn.Conv2d(4, 5, 1, bias=False), torch.nn.Conv2d(6, 5, 1, bias=False)]
    verts = torch.randn(2, 50, 3) * 0.15 + torch.tensor([0.0, 0.0, -0.8])
    before = pool_features([c(m) for c, m in zip(convs, maps)], verts, S, combine="sum")
    weight = torch.cat([c.weight[:, :, 0, 0] for c in convs], dim=1)  # (5, 10)
    after = pool_features(maps, verts, S) @ weight.T
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)


def test_graph_conv_under_autocast_follows_float32():
    """Under bfloat16 autocast the products run in bfloat16 in both passes and the neighbour mean in float32: the
    output and every gradient (in its parameter's dtype) stay within bfloat16's rounding of float32's."""
    torch.manual_seed(4)
    conv = GraphConv(6, 5)
    adjacency = mean_adjacency(torch.tensor([[0, 1], [0, 2], [1, 2], [2, 3]]), 4)
    x, applied = torch.randn(4, 3, 4, requires_grad=True), torch.randn(4, 3, 10, requires_grad=True)
    results = []
    for enabled in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
            out = conv(x, adjacency, applied)
        grads = torch.autograd.grad(out.float().square().sum(), (x, applied, *conv.parameters()))
        results.append((out, grads))
    (ref, ref_grads), (out, grads) = results
    assert not torch.equal(out.float(), ref)  # the products did run in bfloat16
    assert [g.dtype for g in grads] == [torch.float32] * 5
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2 * float(want.abs().max()))
