import shutil

import pytest

from p2m.data import DataError, available_splits, find_samples


def test_flat_layout_of_the_real_sample(sample_dir):
    samples = find_samples(sample_dir)
    assert len(samples) == 25
    assert {s.synset for s in samples} == {"02691156"} and {s.category for s in samples} == {"airplane"}
    assert len({s.model_id for s in samples}) == 5 and {s.view for s in samples} == {"00", "01", "02", "03", "04"}
    assert all(s.image_path.exists() for s in samples)


def _rendering_copy(sample_dir, tmp_path):
    """The real sample rearranged into the authors' layout: <synset>/<model>/rendering/<view>."""
    root = tmp_path / "ShapeNetP2M"
    lines = []
    for dat in sorted(sample_dir.glob("02691156/*/*.dat")):
        dest = root / dat.parent.relative_to(sample_dir) / "rendering"
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(dat, dest / dat.name)
        shutil.copy(dat.with_suffix(".png"), dest / dat.with_suffix(".png").name)
        lines.append(f"Data/ShapeNetP2M/{dat.parent.relative_to(sample_dir).as_posix()}/rendering/{dat.name}")
    return root, lines


def test_rendering_layout_with_file_lists_and_author_prefixes(sample_dir, tmp_path):
    root, lines = _rendering_copy(sample_dir, tmp_path)
    (root / "train_list.txt").write_text("\n".join(lines[:20]) + "\n")
    (root / "test_list.txt").write_text("# held out\n" + "\n".join(lines[20:]) + "\n\n")
    assert available_splits(root) == ["train", "test"]
    train, test = find_samples(root, "train"), find_samples(root, "test")
    assert len(train) == 20 and len(test) == 5
    assert all(s.dat_path.exists() and s.dat_path.parent.name == "rendering" for s in train + test)
    assert test[0].model_id == lines[20].split("/")[3]
    assert len(find_samples(root)) == 25  # the whole tree without lists


def test_bad_list_line_names_file_and_line(tmp_path):
    (tmp_path / "train_list.txt").write_text("02691156/abc/rendering/00.dat\nnot/a/sample.txt\n")
    with pytest.raises(DataError, match=r"train_list\.txt: line 2: 'not/a/sample\.txt' is not a"):
        find_samples(tmp_path, "train")


def test_missing_root_split_or_samples(tmp_path):
    with pytest.raises(DataError, match="dataset directory does not exist"):
        find_samples(tmp_path / "nope")
    with pytest.raises(DataError, match="no file list for split 'val'"):
        find_samples(tmp_path, "val")
    with pytest.raises(DataError, match="no samples found"):
        find_samples(tmp_path)
