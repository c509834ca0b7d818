"""Nearest neighbours between batched point sets, without the full (N, P, Q) distance matrix.

The index search runs without autograd and is exact: pytorch3d's ``knn_points`` when importable, else
a KD-tree (pykdtree, or scipy's without it; in float64) for CPU tensors, else chunks of directly computed
distances in torch (``torch.cdist`` without its matmul expansion, whose cancellation on points far from the
origin, such as the camera-frame Z near -0.8, picks a wrong neighbour where two are within about 1e-7). Distances are
then recomputed on the gathered points with autograd, so the backward pass costs O(N * P) memory, not
O(N * P * Q).
"""
from __future__ import annotations

import functools
import importlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 24  # distance entries per chunk (64 MiB in float32)


def has_pytorch3d() -> bool:
    return _importable("pytorch3d.ops")


@functools.cache  # a failed import is not cached by Python: it searches sys.path again at every call
def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def nearest_indices(x: Tensor, y: Tensor, y_lengths: Tensor | None = None, backend: str = "auto",
                    chunk_elements: int = _CHUNK_ELEMENTS) -> Tensor:
    """Index of the nearest point of ``y`` for every point of ``x``.

    Args:
        x: FloatTensor (N, P, 3) query points.
        y: FloatTensor (N, Q, 3) reference points, padded beyond ``y_lengths``.
        y_lengths: LongTensor (N,) number of valid points of each ``y`` (all Q when None); each >= 1.
        backend: "auto" (pytorch3d when importable, else "kdtree" on CPU and "torch" elsewhere),
            "kdtree", "torch" or "pytorch3d".
        chunk_elements: the most distance entries the pure-torch search holds at once.

    Returns:
        LongTensor (N, P) with values in [0, y_lengths[n]).
    """
    _validate_points(x, "x")
    _validate_points(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}")
    if y.shape[1] == 0:
        raise ValueError("y must have at least one point")
    backend = _validate_backend(backend, x.device)
    with torch.no_grad():
        if backend == "pytorch3d":
            from pytorch3d.ops import knn_points

            N, P, _ = x.shape
            x_len = torch.full((N,), P, dtype=torch.long, device=x.device)
            y_len = y_lengths if y_lengths is not None else torch.full((N,), y.shape[1], dtype=torch.long, device=x.device)
            return knn_points(x.float(), y.float(), lengths1=x_len, lengths2=y_len, K=1).idx[..., 0]
        if backend == "kdtree" and bool(torch.isfinite(x).all()) and bool(torch.isfinite(y).all()):
            return _nearest_kdtree(x, y, y_lengths)
        # (non-finite points: any in-range index will do, the loss they enter is not finite either)
        return _nearest_torch(x.detach(), y.detach(), y_lengths, chunk_elements)


def nearest_sq_dists(x: Tensor, y: Tensor, y_lengths: Tensor | None = None, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """Squared distance from every point of ``x`` to its nearest point of ``y``, differentiable in both.

    Returns:
        (dists, idx): FloatTensor (N, P) squared distances and LongTensor (N, P) indices into ``y``.
    """
    idx = nearest_indices(x, y, y_lengths, backend)
    nearest = gather_points(y, idx)  # (N, P, 3)
    return ((x - nearest) ** 2).sum(-1), idx


def gather_points(points: Tensor, idx: Tensor) -> Tensor:
    """points (N, Q, C), idx (N, P) -> (N, P, C)."""
    return points.gather(1, idx[..., None].expand(-1, -1, points.shape[-1]))


def valid_mask(lengths: Tensor, size: int) -> Tensor:
    """BoolTensor (N, size): True for the first lengths[n] entries of row n (the real, unpadded points)."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def _nearest_kdtree(x: Tensor, y: Tensor, y_lengths: Tensor | None) -> Tensor:
    xs, ys = x.detach().cpu().double().numpy(), y.detach().cpu().double().numpy()
    valid = [ys.shape[1]] * len(ys) if y_lengths is None else y_lengths.tolist()
    out = np.empty(x.shape[:2], dtype=np.int64)
    if KDTREE == "pykdtree":
        from pykdtree.kdtree import KDTree

        for n in range(x.shape[0]):  # each query runs on pykdtree's own OpenMP threads
            out[n] = KDTree(np.ascontiguousarray(ys[n, :valid[n]])).query(xs[n], k=1)[1]
    else:
        from scipy.spatial import cKDTree

        def one(n: int) -> None:
            out[n] = cKDTree(ys[n, :valid[n]]).query(xs[n])[1]

        # scipy releases the GIL while it queries: the batch's items share torch's threads
        list(_pool().map(one, range(x.shape[0])))
    return torch.from_numpy(out).to(x.device)


# The KD-tree behind backend "kdtree": pykdtree (a dependency; about 3x scipy's cKDTree on the model's
# clouds, and threaded) when importable, else scipy's. Both are exact, in float64.
KDTREE = "pykdtree" if _importable("pykdtree.kdtree") else "scipy"
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool() -> ThreadPoolExecutor:
    """A pool of as many threads as torch computes with (1 in a Ray trial of one CPU), one per process
    (a forked child has no threads of its parent's pool)."""
    key = (os.getpid(), torch.get_num_threads())
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(max_workers=key[1], thread_name_prefix="p2m-kdtree")
    return _POOLS[key]


def _nearest_torch(x: Tensor, y: Tensor, y_lengths: Tensor | None, chunk_elements: int) -> Tensor:
    N, P, _ = x.shape
    Q = y.shape[1]
    step = max(1, chunk_elements // max(1, N * Q))
    out = torch.empty(N, P, dtype=torch.long, device=x.device)
    for start in range(0, P, step):
        d = torch.cdist(x[:, start:start + step], y, compute_mode="donot_use_mm_for_euclid_dist")  # (N, c, Q)
        if y_lengths is not None:
            d = d.masked_fill(~valid_mask(y_lengths, Q)[:, None, :], float("inf"))
        out[:, start:start + step] = d.argmin(-1)
    return out


def _validate_points(points: Tensor, name: str) -> None:
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (N, P, 3), got {tuple(points.shape)}")


def _validate_backend(backend: str, device: torch.device) -> str:
    if backend not in ("auto", "kdtree", "torch", "pytorch3d"):
        raise ValueError(f"backend must be 'auto', 'kdtree', 'torch' or 'pytorch3d', got {backend!r}")
    if backend == "auto":
        if has_pytorch3d():
            return "pytorch3d"
        return "kdtree" if device.type == "cpu" else "torch"
    if backend == "pytorch3d" and not has_pytorch3d():
        raise ValueError("backend 'pytorch3d' requested but pytorch3d is not installed")
    return backend
