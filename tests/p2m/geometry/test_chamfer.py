import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from p2m.geometry import chamfer_distance, nearest_indices, nearest_sq_dists
from p2m.geometry import knn
from p2m.geometry.knn import has_pytorch3d


def _brute_nearest(x, y):
    """Plain loops over the batch, dense distances: the reference."""
    idx, dist = [], []
    for xn, yn in zip(x, y):
        d = ((xn[:, None, :] - yn[None, :, :]) ** 2).sum(-1)  # (P, Q)
        idx.append(d.argmin(-1))
        dist.append(d.min(-1).values)
    return torch.stack(idx), torch.stack(dist)


@pytest.fixture(params=["pykdtree", "scipy"], autouse=True)
def kdtree(request, monkeypatch):
    """Every test runs with each KD-tree behind backend "kdtree" (and "auto" on a CPU)."""
    if request.param == "pykdtree" and not knn._importable("pykdtree.kdtree"):
        pytest.skip("pykdtree is not installed")
    monkeypatch.setattr(knn, "KDTREE", request.param)
    return request.param


@pytest.mark.parametrize("backend, chunk", [("torch", 1), ("torch", 7), ("torch", 1 << 24), ("kdtree", 1 << 24)])
def test_indices_match_brute_force_and_kdtree(backend, chunk):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 257, 3, generator=g, dtype=torch.float64)
    y = torch.rand(3, 511, 3, generator=g, dtype=torch.float64)
    idx = nearest_indices(x, y, backend=backend, chunk_elements=chunk)
    ref_idx, ref_d = _brute_nearest(x, y)
    assert torch.equal(idx, ref_idx)
    for n in range(3):
        kd_d, kd_i = cKDTree(y[n].numpy()).query(x[n].numpy())
        np.testing.assert_array_equal(idx[n].numpy(), kd_i)
        d, _ = nearest_sq_dists(x[n:n + 1], y[n:n + 1], backend="torch")
        np.testing.assert_allclose(d[0].numpy(), kd_d ** 2, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "kdtree"])
def test_exact_on_float32_points_far_from_the_origin(backend):
    """Camera-frame points (Z near -0.8) with neighbours closer than 1e-7 in squared distance: a matmul-expanded
    distance (|x|^2 - 2 x.y + |y|^2 in float32) picks the wrong one for some; a direct one does not."""
    g = torch.Generator().manual_seed(5)
    centre = torch.tensor([0.0, 0.0, -0.8])
    x = torch.randn(2, 2466, 3, generator=g) * 0.1 + centre
    y = torch.randn(2, 9000, 3, generator=g) * 0.1 + centre
    idx = nearest_indices(x, y, backend=backend)
    expanded_wrong = 0
    for n in range(2):
        d, ref = cKDTree(y[n].double().numpy()).query(x[n].double().numpy(), k=2)
        sure = d[:, 1] ** 2 - d[:, 0] ** 2 > 1e-12  # not a tie at float32's resolution of these distances
        np.testing.assert_array_equal(idx[n].numpy()[sure], ref[sure, 0])
        expanded = torch.baddbmm((y[n:n + 1] ** 2).sum(-1)[:, None], x[n:n + 1], y[n:n + 1].transpose(1, 2), alpha=-2)
        expanded_wrong += int((expanded.argmin(-1)[0].numpy() != ref[:, 0])[sure].sum())
    assert expanded_wrong > 0  # the case is hard enough to tell the two apart


def test_float32_distances_match_kdtree():
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 2466, 3, generator=g), torch.rand(2, 3000, 3, generator=g)
    d, _ = nearest_sq_dists(x, y, backend="torch")
    for n in range(2):
        kd_d, _ = cKDTree(y[n].double().numpy()).query(x[n].double().numpy())
        np.testing.assert_allclose(d[n].numpy(), kd_d ** 2, atol=1e-6)


def test_padding_is_ignored():
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 50, 3, generator=g), torch.rand(2, 80, 3, generator=g)
    lengths = torch.tensor([80, 30])
    y_padded = y.clone()
    y_padded[1, 30:] = 0.5  # padding right in the middle of the cloud would win if it counted
    for backend in ("torch", "kdtree"):
        idx = nearest_indices(x, y_padded, lengths, backend=backend)
        assert idx[1].max() < 30
        assert torch.equal(idx[1], _brute_nearest(x[1:], y[1:, :30])[0][0])
        assert torch.equal(idx[0], _brute_nearest(x[:1], y[:1])[0][0])


def test_non_finite_points_give_indices_in_range():
    x = torch.rand(1, 20, 3)
    x[0, 3] = float("nan")
    idx = nearest_indices(x, torch.rand(1, 10, 3), backend="kdtree")
    assert idx.shape == (1, 20) and 0 <= idx.min() and idx.max() < 10


def test_chamfer_matches_dense_reference_values_and_gradients():
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(2, 40, 3, generator=g, dtype=torch.float64, requires_grad=True)
    gt = torch.rand(2, 60, 3, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([60, 45])
    ch = chamfer_distance(pred, gt, lengths, backend="torch")
    loss = (ch.gt_to_pred + 0.55 * ch.pred_to_gt).sum()
    grad_pred, grad_gt = torch.autograd.grad(loss, (pred, gt))

    pred_r, gt_r = pred.detach().clone().requires_grad_(), gt.detach().clone().requires_grad_()
    ref = 0
    for n in range(2):
        d = ((pred_r[n][:, None] - gt_r[n, : lengths[n]][None]) ** 2).sum(-1)  # (V, P_n)
        ref = ref + d.min(0).values.mean() + 0.55 * d.min(1).values.mean()
    ref_grad_pred, ref_grad_gt = torch.autograd.grad(ref, (pred_r, gt_r))
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad_pred, ref_grad_pred)
    torch.testing.assert_close(grad_gt, ref_grad_gt)
    assert grad_gt[1, 45:].abs().sum() == 0


def test_chamfer_of_identical_sets_is_zero():
    x = torch.rand(1, 100, 3)
    ch = chamfer_distance(x, x.clone(), backend="torch")
    assert ch.pred_to_gt.item() == pytest.approx(0, abs=1e-7) and ch.gt_to_pred.item() == pytest.approx(0, abs=1e-7)


@pytest.mark.skipif(not has_pytorch3d(), reason="pytorch3d is not installed (optional backend)")
def test_pytorch3d_parity():
    from pytorch3d.loss import chamfer_distance as p3d_chamfer

    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(2, 300, 3, generator=g), torch.rand(2, 400, 3, generator=g)
    assert torch.equal(nearest_indices(x, y, backend="torch"), nearest_indices(x, y, backend="pytorch3d"))
    ours = chamfer_distance(x, y, backend="torch")
    ref, _ = p3d_chamfer(x, y, batch_reduction=None)
    torch.testing.assert_close(ours.pred_to_gt + ours.gt_to_pred, ref)


@pytest.mark.parametrize("x, y, message", [
    (torch.rand(2, 5, 2), torch.rand(2, 5, 3), r"x must have shape \(N, P, 3\)"),
    (torch.rand(2, 5, 3), torch.rand(3, 5, 3), "same batch size"),
    (torch.rand(2, 5, 3), torch.rand(2, 0, 3), "at least one point"),
])
def test_bad_inputs(x, y, message):
    with pytest.raises(ValueError, match=message):
        nearest_indices(x, y)


def test_bad_backend():
    with pytest.raises(ValueError, match="backend must be"):
        nearest_indices(torch.rand(1, 2, 3), torch.rand(1, 2, 3), backend="faiss")
