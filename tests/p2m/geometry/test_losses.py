"""Mesh losses and metrics against naive references (loops, dense matrices, trimesh, scipy)."""
import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from p2m.geometry.edge import edge_target_loss, p2m_edge_loss
from p2m.geometry.laplacian import laplacian_change_loss, laplacian_coords, laplacian_smoothing_loss
from p2m.geometry.mesh import edges_from_faces, face_adjacency, face_normals, mean_adjacency, vertex_normals
from p2m.geometry.metrics import mesh_metrics
from p2m.geometry.move import move_loss
from p2m.geometry.normal import edge_normal_loss, normal_consistency_loss


@pytest.fixture(scope="module")
def sphere():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    verts = torch.tensor(mesh.vertices, dtype=torch.float64)[None]
    faces = torch.tensor(mesh.faces)
    return mesh, verts, faces


def test_edges_and_neighbours_match_trimesh(sphere):
    mesh, verts, faces = sphere
    edges = edges_from_faces(faces)
    assert {tuple(e) for e in edges.tolist()} == {tuple(sorted(e)) for e in mesh.edges_unique.tolist()}
    adj = mean_adjacency(edges, len(mesh.vertices)).to_dense()
    for v, nbrs in enumerate(mesh.vertex_neighbors):
        assert sorted(adj[v].nonzero()[:, 0].tolist()) == sorted(nbrs)
        torch.testing.assert_close(adj[v, nbrs], torch.full((len(nbrs),), 1.0 / len(nbrs)))


def test_face_adjacency_matches_trimesh(sphere):
    mesh, _, faces = sphere
    ours = {tuple(sorted(p)) for p in face_adjacency(faces).tolist()}
    assert ours == {tuple(sorted(p)) for p in mesh.face_adjacency.tolist()}


def test_normals_match_trimesh(sphere):
    mesh, verts, faces = sphere
    np.testing.assert_allclose(face_normals(verts, faces)[0].numpy(), mesh.face_normals, atol=1e-10)
    vn = vertex_normals(verts, faces)[0].numpy()
    ref = np.zeros_like(mesh.vertices)  # loop: sum of incident faces' area vectors
    for f in mesh.faces:
        a, b, c = mesh.vertices[f]
        ref[f] += np.cross(b - a, c - a)
    np.testing.assert_allclose(vn, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-10)
    radial = mesh.vertices / np.linalg.norm(mesh.vertices, axis=1, keepdims=True)
    assert (vn * radial).sum(1).min() > 0.99  # and they point outwards


def test_edge_losses_by_hand():
    verts = torch.tensor([[[0.0, 0, 0], [3, 0, 0], [0, 4, 0]]])
    edges = torch.tensor([[0, 1], [0, 2], [1, 2]])
    # lengths 3, 4, 5; the reference's rows: the 3 edges both ways and 3 zero-length self-loops
    torch.testing.assert_close(p2m_edge_loss(verts, edges), torch.tensor([2 * (9 + 16 + 25) / (2 * 3 + 3)]))
    torch.testing.assert_close(edge_target_loss(verts, edges, 4.0), torch.tensor([(1 + 0 + 1) / 3]))
    empty = p2m_edge_loss(verts.requires_grad_(), torch.zeros(0, 2, dtype=torch.long))
    assert empty.item() == 0
    empty.sum().backward()
    assert verts.grad is not None


def test_move_loss_by_hand():
    before = torch.zeros(2, 3, 3)
    after = before.clone()
    after[0, 0] = torch.tensor([1.0, 2.0, 2.0])  # |d|^2 = 9 on one of three vertices
    after[1] += 0.5  # a translation moves every vertex: |d|^2 = 0.75 each
    torch.testing.assert_close(move_loss(before, after), torch.tensor([3.0, 0.75]))
    with pytest.raises(ValueError, match="same shape"):
        move_loss(before, after[:, :2])


# The neighbour mean runs in float32 (outside autocast) whatever the input's dtype, and sums a handful of
# float32 products: compare with the float64 loops at float32's tolerance, not float64's default
# (1e-7 absolute, which a 1.08e-7 error on another machine's BLAS exceeded).
FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}


def test_laplacian_by_loops(sphere):
    mesh, verts, faces = sphere
    adj = mean_adjacency(edges_from_faces(faces), verts.shape[1])
    g = torch.Generator().manual_seed(0)
    moved = verts + 0.05 * torch.randn(verts.shape, generator=g, dtype=verts.dtype)
    ref = torch.stack([moved[0, v] - moved[0, nb].mean(0) for v, nb in enumerate(mesh.vertex_neighbors)])
    torch.testing.assert_close(laplacian_coords(moved, adj)[0], ref, **FLOAT32)
    ref_before = torch.stack([verts[0, v] - verts[0, nb].mean(0) for v, nb in enumerate(mesh.vertex_neighbors)])
    torch.testing.assert_close(laplacian_change_loss(verts, moved, adj),
                               ((ref - ref_before) ** 2).sum(-1).mean()[None], **FLOAT32)
    torch.testing.assert_close(laplacian_smoothing_loss(moved, adj), ref.norm(dim=-1).mean()[None], **FLOAT32)
    # a translation does not change Laplacian coordinates
    assert laplacian_change_loss(verts, verts + 1.0, adj).item() == pytest.approx(0, abs=1e-12)


def test_neighbor_mean_gradient_equals_the_dense_transpose(sphere):
    """The backward without a transposed adjacency (D A D^-1 g) is the dense A's: a mesh plus an
    isolated vertex, in float64."""
    from p2m.geometry.laplacian import neighbor_mean

    _, verts, faces = sphere
    V = verts.shape[1] + 1  # the last vertex has no neighbours
    adj = mean_adjacency(edges_from_faces(faces), V).to(torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, V, 5, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(2, V, 5, generator=g, dtype=torch.float64)
    (got,) = torch.autograd.grad((neighbor_mean(x, adj) * upstream).sum(), x)
    dense = adj.to_dense()
    (expected,) = torch.autograd.grad(((dense @ x) * upstream).sum(), x)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(neighbor_mean(x, adj), dense @ x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("edges", [[[0, 1], [1, 2], [1, 0]], [[0, 1], [0, 1]], [[0, 1], [2, 2]]])
def test_mean_adjacency_refuses_repeated_edges_and_self_loops(edges):
    with pytest.raises(ValueError, match="distinct undirected edges without self-loops"):
        mean_adjacency(torch.tensor(edges), 3)


def test_edge_normal_loss_by_loops():
    verts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 1]]])
    edges = torch.tensor([[0, 1], [0, 2]])
    gt_normals = torch.tensor([[[0.0, 0, 1], [1, 0, 0]]])
    nearest = torch.tensor([[1, 0, 0]])  # vertex 0 -> GT normal (1,0,0); vertices 1, 2 -> (0,0,1)
    # rows (a, b) use a's normal: 0->1 |cos((-1,0,0), x)| = 1, 1->0 |cos((1,0,0), z)| = 0,
    # 0->2 |cos((0,-1,-1)/sqrt2, x)| = 0, 2->0 |cos((0,1,1)/sqrt2, z)| = 1/sqrt2; three self-loops give 0
    expected = (1 + 0 + 0 + 2 ** -0.5) / (2 * 2 + 3)
    torch.testing.assert_close(edge_normal_loss(verts, edges, gt_normals, nearest), torch.tensor([expected]))


def test_edge_normal_loss_against_directed_rows(sphere):
    """On a whole mesh: the loop over the reference's rows (both directions, self-loops) in float64."""
    mesh, verts, faces = sphere
    edges = edges_from_faces(faces)
    g = torch.Generator().manual_seed(3)
    moved = verts + 0.05 * torch.randn(verts.shape, generator=g, dtype=verts.dtype)
    gt_normals = torch.nn.functional.normalize(torch.randn(1, 50, 3, generator=g, dtype=verts.dtype), dim=-1)
    nearest = torch.randint(0, 50, (1, verts.shape[1]), generator=g)
    rows = [(a, b) for a, b in edges.tolist()] + [(b, a) for a, b in edges.tolist()] + \
        [(v, v) for v in range(verts.shape[1])]
    total = 0.0
    for a, b in rows:
        e = (moved[0, a] - moved[0, b]).numpy()
        n = gt_normals[0, nearest[0, a]].numpy()
        total += 0.0 if a == b else abs(e @ n) / np.linalg.norm(e)
    assert edge_normal_loss(moved, edges, gt_normals, nearest).item() == pytest.approx(total / len(rows), rel=1e-12)


def test_normal_consistency_flat_vs_folded():
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    pairs = face_adjacency(faces)
    flat = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]])
    assert normal_consistency_loss(flat, faces, pairs).item() == pytest.approx(0, abs=1e-7)
    folded = flat.clone()
    folded[0, 3] = torch.tensor([0.0, 0, 1])  # second face stands at 90 degrees (after the shared edge 0-2)
    n1 = np.cross([1, 0, 0], [1, 1, 0])
    n2 = np.cross([1, 1, 0], [0, 0, 1])
    expected = 1 - np.dot(n1 / np.linalg.norm(n1), n2 / np.linalg.norm(n2))
    assert normal_consistency_loss(folded, faces, pairs).item() == pytest.approx(expected, abs=1e-6)


def test_metrics_against_scipy(sphere):
    mesh, verts, faces = sphere
    edges = edges_from_faces(faces)
    adj = mean_adjacency(edges, verts.shape[1])
    gt_mesh = trimesh.creation.icosphere(subdivisions=4, radius=1.02)
    pts, fid = trimesh.sample.sample_surface(gt_mesh, 3000, seed=0)
    gt = torch.tensor(pts, dtype=torch.float32)[None]
    gtn = torch.tensor(gt_mesh.face_normals[fid], dtype=torch.float32)[None]
    m = mesh_metrics(verts.float(), faces, edges, adj, gt, gtn)
    v = mesh.vertices
    d_pred, _ = cKDTree(pts).query(v)
    d_gt, _ = cKDTree(v).query(pts)
    cd = (d_pred ** 2).mean() + (d_gt ** 2).mean()
    assert m["cd"].item() == pytest.approx(cd, rel=1e-4)
    assert m["cd_x1000"].item() == pytest.approx(1000 * cd, rel=1e-4)
    for key, tau in (("f_tau", 1e-4), ("f_2tau", 2e-4)):
        p, r = (d_pred ** 2 < tau).mean(), (d_gt ** 2 < tau).mean()
        assert m[key].item() == pytest.approx(0 if p + r == 0 else 200 * p * r / (p + r), abs=1e-3)
    assert m["normal_consistency"].item() > 0.95  # sphere normals agree
    assert 0 < m["smoothness"].item() < 0.5
