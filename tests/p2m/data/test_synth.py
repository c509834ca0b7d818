import numpy as np
import pytest

from p2m.data import find_samples, project, read_dat, read_image
from p2m.data.check import check_dataset
from p2m.data.preview import mask_coverage
from p2m.data.synth import FAMILIES, SynthConfig, generate


def test_synthetic_data_reads_back_through_the_same_reader(synth_dir):
    report = check_dataset(synth_dir)
    assert report.ok, report.errors
    # 3 models per category split 1/1/1 by model, 2 views each
    assert report.counts == {split: {c: 2 for c in FAMILIES} for split in ("train", "val", "test")}
    assert report.image_sizes == [137]
    assert 7500 <= report.points_min <= report.points_max <= 9200


def test_splits_keep_the_views_of_a_model_together(synth_dir):
    models = {split: {s.model_id for s in find_samples(synth_dir, split)} for split in ("train", "val", "test")}
    assert not models["train"] & models["val"] and not models["train"] & models["test"] and not models["val"] & models["test"]


def test_views_and_points_agree(synth_dir):
    for s in find_samples(synth_dir):
        rgba = read_image(s.image_path)
        gt = read_dat(s.dat_path)
        assert rgba.shape == (137, 137, 4)
        assert mask_coverage(project(gt[:, :3], 137), rgba[..., 3]) >= 0.99, s.dat_path
        assert (rgba[0, :, 3] == 0).all() and (rgba[:, 0, 3] == 0).all(), "the object is not cut by the frame"


def _stats(samples):
    gts = [read_dat(s.dat_path)[:, :3] for s in samples]
    z_near = np.mean([g[:, 2].max() for g in gts])
    z_far = np.mean([g[:, 2].min() for g in gts])
    extent = np.mean([np.linalg.norm(g.max(0) - g.min(0)) for g in gts])
    return np.array([z_near, z_far, extent])


def test_scale_and_depth_match_the_real_sample(synth_dir, sample_dir):
    real = _stats(find_samples(sample_dir))
    synth = _stats(find_samples(synth_dir))
    airplanes = _stats([s for s in find_samples(synth_dir) if s.category == "airplane"])
    for ours in (synth, airplanes):
        ratio = ours / real
        assert np.all((ratio > 1 / 1.5) & (ratio < 1.5)), (ours, real)


def test_same_seed_same_bytes_different_seed_different_data(tmp_path):
    def make(name, seed, workers):
        out = tmp_path / name
        generate(SynthConfig(out=str(out), categories=("chair", "lamp"), models_per_category=2, views=2,
                             seed=seed, workers=workers), progress=False)
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
                and p.name != "synth_meta.json"}

    a, b, c = make("a", 3, 1), make("b", 3, 2), make("c", 4, 2)
    assert a == b  # identical whatever the number of workers
    assert a.keys() != c.keys()


def test_flat_layout(tmp_path):
    generate(SynthConfig(out=str(tmp_path), categories=("car",), models_per_category=1, views=2, layout="flat",
                         workers=1), progress=False)
    samples = find_samples(tmp_path)
    assert len(samples) == 2 and samples[0].dat_path.parent.name != "rendering"


@pytest.mark.parametrize("kwargs, message", [
    (dict(categories=("boat",)), r"categories: unknown \['boat'\]"),
    (dict(views=0), "views must be >= 1"),
    (dict(models_per_category=0), "models_per_category must be >= 1"),
    (dict(layout="nested"), "layout must be"),
])
def test_config_is_checked(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(out=str(tmp_path), **kwargs)
