"""search/smoke.py: the smoke test's dataset on a node that lacks the driver's copy (issue 29, defect 2). A "node" is
this process with its own cache directory ($P2M_CACHE_DIR); the driver's dataset path does not exist on it."""
import dataclasses
import importlib
import multiprocessing as mp
import shutil
from pathlib import Path

import pytest

from p2m.config import TrainConfig
from p2m.data.layout import SPLITS, find_samples, list_file
from p2m.names import SYNTH_META_FILE
from search import smoke
from search.smoke import local_data, make_smoke_data, smoke_cache_dir

# the module: the package binds the name to its function
synth_generate = importlib.import_module("p2m.data.synth.generate")


def _cfg(root: Path, is_smoke: bool = True) -> TrainConfig:
    return dataclasses.replace(TrainConfig(), data=dataclasses.replace(TrainConfig().data, root=str(root),
                                                                       smoke=is_smoke))


def test_a_smoke_trial_on_a_node_without_the_dataset_makes_the_same_one_in_its_cache(tmp_path, monkeypatch):
    driver = make_smoke_data(tmp_path / "driver-host" / "smoke-data")  # what the driver made, on its own disk
    monkeypatch.setenv("P2M_CACHE_DIR", str(tmp_path / "node-cache"))
    cfg = _cfg(tmp_path / "elsewhere" / "smoke-data")  # the driver's path, which this node does not have
    local = local_data(cfg)
    root = Path(local.data.root)
    assert root == smoke_cache_dir() and root.is_relative_to(tmp_path / "node-cache")
    assert dataclasses.replace(local, data=cfg.data) == cfg  # only the root moved
    for split in SPLITS:  # every split readable, and the same dataset as the driver's (seeded)
        assert find_samples(root, split)
        assert list_file(root, split).read_text() == list_file(driver, split).read_text()
    first = find_samples(root, "train")[0]
    assert first.dat_path.read_bytes() == (driver / first.dat_path.relative_to(root)).read_bytes()
    made = (root / SYNTH_META_FILE).stat().st_mtime_ns
    assert local_data(cfg) == local  # the next trial on this node uses it as it is
    assert (root / SYNTH_META_FILE).stat().st_mtime_ns == made
    assert not list(root.parent.glob(".*synth-*"))  # no temporary directory left


def test_a_config_whose_root_is_there_or_which_is_not_the_smoke_dataset_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("P2M_CACHE_DIR", str(tmp_path / "node-cache"))
    monkeypatch.setattr(smoke, "generate", lambda *a, **k: pytest.fail("nothing to make"))
    user_data = _cfg(tmp_path / "missing", is_smoke=False)  # a user's dataset missing here: the pre-flight's matter
    assert local_data(user_data) is user_data
    there = tmp_path / "shared" / "smoke-data"  # the driver's copy, seen here too (a shared file system)
    there.mkdir(parents=True)
    (there / SYNTH_META_FILE).write_text("{}")
    assert local_data(_cfg(there)) == _cfg(there)
    assert not (tmp_path / "node-cache").exists()


def _make_logged(path: str, log: str) -> None:
    real = smoke.generate

    def logged(cfg, progress=True):
        with open(log, "a") as f:
            f.write("made\n")
        return real(cfg, progress)

    smoke.generate = logged
    make_smoke_data(path)


@pytest.mark.slow
def test_trials_of_one_node_make_it_once_and_a_lost_rename_is_harmless(tmp_path, monkeypatch):
    path, log = tmp_path / "cache" / "smoke-data", tmp_path / "made.log"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_make_logged, args=(str(path), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "made\n"  # one made it, the others waited for it and found it made
    assert find_samples(path, "train") and not list(path.parent.glob(".*synth-*"))

    # a maker that takes no lock (another host's driver on a shared disk) renames its copy into place while this one
    # is writing: this one's rename fails, its copy is dropped and the other used
    other = tmp_path / "other" / "smoke-data"
    real_into = synth_generate._generate_into

    def racing(cfg, progress):
        report = real_into(cfg, progress)
        shutil.copytree(path, other)  # the other maker's whole copy, landed first
        return report

    monkeypatch.setattr(synth_generate, "_generate_into", racing)
    with pytest.raises(OSError):  # what generate alone does on the lost race
        synth_generate.generate(synth_generate.SynthConfig(out=str(other), workers=1, **smoke.SMOKE_SYNTH),
                                progress=False)
    shutil.rmtree(other)
    assert make_smoke_data(other) == other and find_samples(other, "val")
    assert (other / SYNTH_META_FILE).read_bytes() == (path / SYNTH_META_FILE).read_bytes()
    assert not list(other.parent.glob(".*synth-*"))
