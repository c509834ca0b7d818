import numpy as np
import pytest
import torch

from p2m.data import find_samples, project, read_dat, read_image
from p2m.data.camera import camera_rotation, intrinsics, pixel_rays, world_to_camera
from p2m.data.preview import mask_coverage


def test_projection_by_hand():
    # for 224 px: u = 248 X / (-Z) + 111.5, v = 248 Y / Z + 111.5
    pts = np.array([[0.0, 0.0, -1.0], [0.1, 0.2, -0.8], [-0.3, -0.1, -0.5]])
    expected = np.array([[111.5, 111.5], [111.5 + 248 * 0.1 / 0.8, 111.5 - 248 * 0.2 / 0.8],
                         [111.5 - 248 * 0.3 / 0.5, 111.5 + 248 * 0.1 / 0.5]])
    np.testing.assert_allclose(project(pts, 224), expected)
    np.testing.assert_allclose(project(pts, 137), expected * 137 / 224)


def test_projection_is_the_same_for_numpy_and_torch_and_differentiable():
    pts = torch.tensor([[0.05, -0.1, -0.7], [0.2, 0.1, -0.9]], dtype=torch.float64, requires_grad=True)
    uv = project(pts, 224)
    np.testing.assert_allclose(uv.detach().numpy(), project(pts.detach().numpy(), 224))
    uv.sum().backward()
    assert torch.isfinite(pts.grad).all() and pts.grad.abs().sum() > 0


def test_real_gt_lies_inside_the_alpha_mask(sample_dir):
    samples = find_samples(sample_dir)
    assert len(samples) == 25
    for s in samples:
        rgba = read_image(s.image_path)
        uv = project(read_dat(s.dat_path)[:, :3], rgba.shape[0])
        assert mask_coverage(uv, rgba[..., 3]) >= 0.99, s.dat_path


def test_a_wrong_camera_misses_the_mask(sample_dir):
    # the check can fail: mirroring u (a sign error) drops coverage far below 99%
    s = find_samples(sample_dir)[0]
    rgba = read_image(s.image_path)
    uv = project(read_dat(s.dat_path)[:, :3], rgba.shape[0])
    uv[:, 0] = rgba.shape[0] - 1 - uv[:, 0] + 15
    assert mask_coverage(uv, rgba[..., 3]) < 0.9


def test_pixel_rays_invert_the_projection():
    rays = pixel_rays(137, supersample=1)
    uv = project(rays * 0.8 / -rays[..., 2:3], 137)  # a point on each ray
    rows, cols = np.meshgrid(np.arange(137), np.arange(137), indexing="ij")
    np.testing.assert_allclose(uv[..., 0], cols, atol=1e-9)
    np.testing.assert_allclose(uv[..., 1], rows, atol=1e-9)


def test_camera_pose_is_a_rotation_looking_at_the_object():
    for az, el in [(0, 25), (123.4, 28), (290, 30)]:
        rot, c = camera_rotation(az, el)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        centre, _ = world_to_camera(np.zeros((1, 3)), np.zeros((1, 3)), az, el, 0.8)
        np.testing.assert_allclose(centre, [[0, 0, -0.8]], atol=1e-12)  # the object centre is on the axis
        up, _ = world_to_camera(np.array([[0, 0.1, 0.0]]), np.zeros((1, 3)), az, el, 0.8)
        assert project(up, 224)[0, 1] < 111.5  # world up is image up


def test_intrinsics_reject_bad_size():
    with pytest.raises(ValueError, match="image_size must be positive"):
        intrinsics(0)
