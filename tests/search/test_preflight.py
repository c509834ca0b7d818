"""search/preflight.py on a local Ray started in this process (one node, 127.0.0.1): the dataset readable and the
experiment's storage writable, else one line naming the node and the path (issue 29, defect 3).

A dataset missing on one host only needs hosts of their own (network namespaces, issue 29's multi-host suite);
here the one node lacks it, which is the same task on the same code path."""
import os
import shutil

import pytest
import ray

from p2m.config import DataConfig
from search.preflight import preflight, preflight_config
from search.run import init_ray

NODE = r"node 127\.0\.0\.1( \([^)]*\))?: "  # how the pre-flight names the local node


@pytest.fixture(scope="module")
def local_ray(module_ray_env, s3_env):
    """Ray in this process, its files in the module's private temp dir; its workers see the test's S3 server."""
    saved = dict(os.environ)
    os.environ.update({"RAY_TMPDIR": module_ray_env["RAY_TMPDIR"], "RAY_USAGE_STATS_ENABLED": "0", **s3_env})
    init_ray(None)
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def test_a_readable_dataset_and_a_writable_experiment_pass(local_ray, synth_dir, tmp_path, s3_bucket):
    exp = tmp_path / "exp"
    exp.mkdir()
    preflight(str(synth_dir), exp, ("train", "val", "test"))
    assert not list(exp.iterdir())  # its probe file deleted again
    preflight(str(synth_dir), f"s3://{s3_bucket}/preflight-exp")  # object storage: an object written and deleted
    # the smoke test's own dataset is made by each trial where it is missing: not checked
    preflight_config(DataConfig(root=str(tmp_path / "smoke-data"), smoke=True), exp)


def test_a_missing_dataset_names_the_node_and_the_path(local_ray, tmp_path):
    (tmp_path / "exp").mkdir()
    missing = tmp_path / "data"
    with pytest.raises(ValueError, match=rf"^{NODE}{missing}: dataset directory does not exist \(every node reads "
                                         r"the dataset from its own disk\)$"):
        preflight(str(missing), tmp_path / "exp")


def test_a_split_without_its_list_or_a_sample_names_the_file(local_ray, synth_dir, tmp_path):
    (tmp_path / "exp").mkdir()
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    (data / "val_list.txt").unlink()
    with pytest.raises(ValueError, match=rf"^{NODE}{data / 'val_list.txt'}: no file list for split 'val'"):
        preflight_config(DataConfig(root=str(data)), tmp_path / "exp")
    (data / "val_list.txt").write_text((synth_dir / "val_list.txt").read_text())
    first = (data / "test_list.txt").read_text().split()[0]
    png = data / first.replace(".dat", ".png")
    png.unlink()
    preflight_config(DataConfig(root=str(data)), tmp_path / "exp")  # the test split is not asked for
    with pytest.raises(ValueError, match=rf"^{NODE}{png}: No such file or directory"):
        preflight_config(DataConfig(root=str(data)), tmp_path / "exp", test_split="test")


def test_an_unwritable_storage_path_names_the_node_and_the_path(local_ray, synth_dir, tmp_path, s3_bucket):
    (tmp_path / "afile").write_text("a file, not a directory\n")
    exp = tmp_path / "afile" / "exp"  # root ignores permissions: a path under a regular file cannot be written
    with pytest.raises(ValueError, match=rf"^{NODE}{exp}: does not exist on this node \(every node writes its "
                                         r"trials' checkpoints there: a shared file system or object storage\)$"):
        preflight(str(synth_dir), exp)
    with pytest.raises(ValueError, match=rf"^{NODE}{tmp_path / 'afile'}: not a directory"):
        preflight(str(synth_dir), tmp_path / "afile")
    if os.geteuid() != 0:  # permissions bind only users other than root
        (tmp_path / "readonly").mkdir(mode=0o500)
        with pytest.raises(ValueError, match=rf"^{NODE}{tmp_path / 'readonly'}: not writable"):
            preflight(str(synth_dir), tmp_path / "readonly")
    with pytest.raises(ValueError, match=rf"^{NODE}s3://no-such-bucket-p2m/exp: not writable \("):
        preflight(str(synth_dir), "s3://no-such-bucket-p2m/exp")


def test_bad_timeout_is_refused():
    with pytest.raises(ValueError, match="timeout_s must be > 0, got 0"):
        preflight("/data", "/exp", timeout_s=0)
