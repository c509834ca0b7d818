import numpy as np
import torch
from torch.utils.data import DataLoader

from p2m.data import find_samples, read_dat, read_image
from p2m.data.dataset import IMAGENET_MEAN, IMAGENET_STD, P2MDataset, collate_p2m


def test_batches_stack_and_keep_full_gt(sample_dir):
    samples = find_samples(sample_dir)[:4]
    ds = P2MDataset(samples, gt_samples=2000, image_size=224)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_p2m)))
    assert batch["images"].shape == (4, 3, 224, 224)
    assert batch["points"].shape == (4, 2000, 3) and batch["normals"].shape == (4, 2000, 3)
    lengths = [read_dat(s.dat_path).shape[0] for s in samples]
    assert batch["num_points_full"].tolist() == lengths
    assert batch["points_full_padded"].shape == (4, max(lengths), 3)
    for i, s in enumerate(samples):
        full = torch.from_numpy(read_dat(s.dat_path))
        torch.testing.assert_close(batch["points_full_padded"][i, : lengths[i]], full[:, :3])
        assert batch["points_full_padded"][i, lengths[i]:].abs().sum() == 0
        # resampled points are rows of the file, drawn without replacement
        rows = {tuple(r) for r in full[:, :3].tolist()}
        assert all(tuple(p) in rows for p in batch["points"][i].tolist())
        assert len({tuple(p) for p in batch["points"][i].tolist()}) == 2000
    assert batch["model_id"] == [s.model_id for s in samples]


def test_image_is_composited_on_white_and_normalised(sample_dir):
    s = find_samples(sample_dir)[0]
    rgba = read_image(s.image_path)
    ds = P2MDataset([s], gt_samples=10, image_size=rgba.shape[0])  # no resize: compare pixel by pixel
    img = ds[0]["images"]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (img * std + mean).permute(1, 2, 0).numpy()
    alpha = rgba[..., 3:] / 255.0
    expected = rgba[..., :3] / 255.0 * alpha + (1 - alpha)
    np.testing.assert_allclose(rgb, expected, atol=1e-5)
    assert np.allclose(rgb[rgba[..., 3] == 0], 1.0, atol=1e-5)  # background is white


def test_resampling_is_seeded_per_epoch(sample_dir):
    s = find_samples(sample_dir)[:1]
    a, b = P2MDataset(s, gt_samples=500, seed=1), P2MDataset(s, gt_samples=500, seed=1)
    torch.testing.assert_close(a[0]["points"], b[0]["points"])
    a.set_epoch(1)
    assert not torch.equal(a[0]["points"], b[0]["points"])


def test_more_samples_than_points_draws_with_replacement(sample_dir):
    s = find_samples(sample_dir)[:1]
    item = P2MDataset(s, gt_samples=12000)[0]
    assert item["points"].shape == (12000, 3)
