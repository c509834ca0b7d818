import numpy as np
import pytest
import torch

from p2m.data import load_pickle
from p2m.data.errors import DataError
from p2m.model import build_template, unpool


def _obj_faces(path):
    return np.array([[int(t) - 1 for t in line.split()[1:4]] for line in path.read_text().splitlines()
                     if line.startswith("f ")])


def test_generated_levels_and_placement():
    t = build_template()
    assert [lv.num_verts for lv in t.levels] == [162, 642, 2562]
    assert [len(lv.faces) for lv in t.levels] == [320, 1280, 5120]
    centre = (t.verts.max(0).values + t.verts.min(0).values) / 2
    torch.testing.assert_close(centre, torch.tensor([0.0, 0.0, -0.8]), atol=1e-6, rtol=0)
    torch.testing.assert_close(t.verts.max(0).values - centre, torch.tensor([0.276, 0.194, 0.2]), atol=1e-6, rtol=0)


def test_authors_template_levels_match_their_files(sample_dir):
    ell = sample_dir / "ellipsoid"
    t = build_template(str(ell / "info_ellipsoid.dat"))
    assert [lv.num_verts for lv in t.levels] == [156, 618, 2466]
    info = load_pickle(ell / "info_ellipsoid.dat")
    # rebuild the authors' level-2 and level-3 vertices from their pooling edges and compare the
    # triangles of face2.obj / face3.obj with ours as sets of coordinates
    verts = info[0].astype(np.float64)
    ours = torch.as_tensor(verts)[None]
    for level, pool in ((1, info[4][0]), (2, info[4][1])):
        verts = np.concatenate([verts, verts[pool].mean(1)])
        ours = unpool(ours, t.levels[level - 1].edges)
        theirs = {frozenset(map(tuple, np.round(verts[f], 6))) for f in _obj_faces(ell / f"face{level + 1}.obj")}
        mine = {frozenset(map(tuple, np.round(ours[0].numpy()[f], 6))) for f in t.levels[level].faces.numpy()}
        assert mine == theirs


def test_unpool_is_batched_differentiable_midpoints():
    t = build_template()
    x = torch.randn(2, 162, 5, requires_grad=True)
    y = unpool(x, t.levels[0].edges)
    assert y.shape == (2, 642, 5)
    e = t.levels[0].edges[17]
    torch.testing.assert_close(y[1, 162 + 17], (x[1, e[0]] + x[1, e[1]]) / 2)


@pytest.mark.parametrize("dim", [0, 1])
def test_unpool_values_and_gradients_equal_the_plain_gather(dim):
    # the reference: the endpoints gathered, averaged and appended (autograd's own backward)
    edges = build_template().levels[0].edges
    shape = (162, 3, 4) if dim == 0 else (3, 162, 4)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    plain = torch.cat([x, 0.5 * (x.index_select(dim, edges[:, 0]) + x.index_select(dim, edges[:, 1]))], dim=dim)
    ours = unpool(x, edges, dim=dim)
    assert torch.equal(ours, plain)
    g = torch.randn_like(plain)
    torch.testing.assert_close(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(plain, x, g)[0],
                               rtol=1e-12, atol=1e-12)


def test_subdivided_faces_keep_orientation():
    t = build_template()
    for lv in t.levels:  # outward normals on every level of the ellipsoid
        v = unpool(unpool(t.verts[None], t.levels[0].edges), t.levels[1].edges)[0][: lv.num_verts]
        f = lv.faces
        n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)
        centre = v[f].mean(1) - torch.tensor([0.0, 0.0, -0.8])
        assert ((n * centre).sum(1) > 0).all()


def test_bad_template_files(tmp_path):
    with pytest.raises(DataError, match="file is missing"):
        build_template(str(tmp_path / "info_ellipsoid.dat"))
