"""Issue 28, item 7: every bad input is refused in one line that names the file or key, with a non-zero exit.

Each row builds one bad input in ``tmp_path`` and returns the ``p2m`` command line that reads it (or, where no
command reads it, a callable that does); the row's fragment must appear in the one line of the error.
"""
from __future__ import annotations

import errno
import importlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from p2m.cli import main

TINY = ["--profile", "tiny"]
SYNSET = "02691156"


def _alias_bomb(tmp: Path) -> list:
    """The classic "billion laughs": 9 levels of 9 aliases, 81 aliases expanding to 9**9 strings."""
    lines, prev = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
        prev = name
    path = tmp / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return ["train", "--config", path, "--out", tmp / "run"]


def _big_yaml(tmp: Path) -> list:
    path = tmp / "big.yaml"
    path.write_text("# padding\n" * 200_000 + "seed: 1\n")  # 2 MB
    return ["train", "--config", path, "--out", tmp / "run"]


def _config(text: str):
    def build(tmp: Path) -> list:
        path = tmp / "config.yaml"
        path.write_text(text)
        return ["train", "--config", path, "--data", tmp, "--out", tmp / "run"]
    return build


def _train_set(*overrides: str):
    def build(tmp: Path) -> list:
        return ["train", *TINY, "--data", tmp, "--out", tmp / "run", *[a for o in overrides for a in ("--set", o)]]
    return build


def _data_with_hash(tmp: Path) -> list:
    return ["train", *TINY, "--data", tmp / "data #1", "--out", tmp / "run"]


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` RGBA pixels (its data is a stub: 80 bytes on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))


def _flat_dataset(tmp: Path) -> Path:
    """One valid view in the flat layout: ``tmp/ds/<synset>/m1/00.{dat,png}``; returns the model directory."""
    from p2m.data.datfile import write_dat

    model = tmp / "ds" / SYNSET / "m1"
    model.mkdir(parents=True)
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(50, 3))
    write_dat(model / "00.dat", np.concatenate([rng.normal(size=(50, 3)), normals / np.linalg.norm(normals, axis=1,
                                                                                                   keepdims=True)], 1))
    Image.new("RGBA", (32, 32)).save(model / "00.png")
    return model


def _big_png(side: int):
    def build(tmp: Path) -> list:
        _png_header(_flat_dataset(tmp) / "00.png", side, side)
        return ["data", "check", tmp / "ds"]
    return build


def _fifo_dat(tmp: Path) -> list:
    dat = _flat_dataset(tmp) / "00.dat"
    dat.unlink()
    os.mkfifo(dat)
    return ["data", "check", tmp / "ds"]


def _dev_zero_dat(tmp: Path) -> list:
    dat = _flat_dataset(tmp) / "00.dat"
    dat.unlink()
    dat.symlink_to("/dev/zero")
    return ["data", "check", tmp / "ds"]


def _synth(tmp: Path) -> Path:
    out = tmp / "synth"
    assert main(["data", "synth", "--out", str(out), "--models-per-category", "2", "--views", "2", "--categories",
                 "lamp", "--workers", "1"]) == 0
    return out


def _synth_without_lists(tmp: Path) -> list:
    out = _synth(tmp)
    for listing in out.glob("*_list.txt"):
        listing.unlink()
    return ["data", "check", out]


def _synth_model_lacking_a_view(tmp: Path) -> list:
    """A model with view 00 only (its poses file lists 2), its lists naming only what is there."""
    out = _synth(tmp)
    folder = sorted(out.glob("*/*/rendering"))[0]
    for path in folder.glob("01.*"):
        path.unlink()
    for listing in out.glob("*_list.txt"):
        gone = f"{folder.relative_to(out).as_posix()}/01.dat"
        listing.write_text("".join(f"{line}\n" for line in listing.read_text().splitlines() if line != gone))
    return ["data", "check", out]


ZERO_WEIGHTS = "".join(f"  w{s}_{t}: 0\n" for s in (1, 2, 3) for t in ("chamfer", "edge", "laplacian", "normal"))

CASES = {
    "alias bomb YAML": (_alias_bomb, "bomb.yaml: YAML expands to more than"),
    "2 MB YAML": (_big_yaml, "big.yaml: 2000008 bytes, more than the 1048576"),
    "--set broken YAML": (_train_set("loss.w1_edge=[1,"), "override loss.w1_edge: not valid YAML"),
    "--set scalar section": (_train_set("loss=3", "loss.w1_edge=1"), "override loss.w1_edge: loss was set to a value"),
    "--set below a value": (_train_set("seed.x=1"), "override seed.x: seed is a value, not a section"),
    "NaN weight in a config": (_config("profile: tiny\nloss:\n  w2_edge: .nan\n"), "loss.w2_edge must be finite, got nan"),
    "inf learning rate in a config": (_config("profile: tiny\noptim:\n  lr: .inf\n"), "optim.lr must be finite, got inf"),
    "-inf weight in a config": (_config("profile: tiny\nloss:\n  w1_chamfer: -.inf\n"), "loss.w1_chamfer must be finite"),
    "NaN weight by --set": (_train_set("loss.w3_normal=nan"), "override: loss.w3_normal must be finite, got nan"),
    "negative weight in a config": (_config("profile: tiny\nloss:\n  w1_edge: -0.1\n"), "loss.w1_edge must be >= 0"),
    "all-zero weights in a config": (_config(f"profile: tiny\nloss:\n{ZERO_WEIGHTS}"),
                                     "all loss weights are 0: nothing to train on"),
    "--data with ' #1'": (_data_with_hash, "data #1: dataset directory does not exist"),
    "20000x20000 PNG": (_big_png(20000), "00.png: image too large to decode"),
    "5000x5000 PNG": (_big_png(5000), "00.png: image is 5000x5000 pixels, larger than the 4096x4096"),
    "FIFO .dat": (_fifo_dat, "00.dat: not a regular file (a FIFO)"),
    ".dat linked to /dev/zero": (_dev_zero_dat, "00.dat: not a regular file (a character device)"),
    "original layout without file lists": (_synth_without_lists, "synth: no file lists (train_list.txt"),
    "model lacking a view": (_synth_model_lacking_a_view, "rendering: 1 views, rendering_metadata.txt lists 2"),
    "0-byte checkpoint": (lambda tmp: _predict(tmp, _empty(tmp / "empty.pt")),
                          "empty.pt: not a readable checkpoint (an empty file)"),
}


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _predict(tmp: Path, checkpoint: Path) -> list:
    image = tmp / "view.png"
    Image.new("RGBA", (64, 64), (200, 100, 50, 255)).save(image)
    return ["predict", "--checkpoint", checkpoint, image, "--out", tmp / "out" / "mesh.obj"]


@pytest.mark.parametrize("build, fragment", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_naming_it(build, fragment, tmp_path, capsys):
    argv = [str(a) for a in build(tmp_path)]
    capsys.readouterr()  # what building the input printed
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2m: error:"), err
    assert fragment in lines[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_state():
    """A checkpoint's state of the tiny profile's model, untrained (its weights as built)."""
    import warnings

    from p2m.config import profile_config
    from p2m.model import Pixel2Mesh

    cfg = profile_config("tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no pretrained backbone weights
        model = Pixel2Mesh(cfg.model, cfg.data.image_size)
    return {"epoch": 1, "config": cfg.to_dict(), "model": model.state_dict()}


def _other_profile(state: dict) -> dict:
    config = {**state["config"], "model": {**state["config"]["model"], "hidden_dim": 48}}
    return {**state, "config": config}


def _nan_weights(state: dict) -> dict:
    model = dict(state["model"])
    key = next(k for k, v in model.items() if v.is_floating_point() and "backbone" not in k)
    model[key] = torch.full_like(model[key], float("nan"))
    return {**state, "model": model}


CHECKPOINT_CASES = {
    "other-profile checkpoint": (_other_profile, "other.pt: weights of another model ("),
    "NaN weights checkpoint": (_nan_weights, "other.pt: the weights hold NaN or infinite values (first in "),
}


@pytest.mark.parametrize("change, fragment", list(CHECKPOINT_CASES.values()), ids=list(CHECKPOINT_CASES))
def test_bad_checkpoint_is_one_line_and_writes_no_mesh(change, fragment, tiny_state, tmp_path, capsys):
    from p2m.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "other.pt", change(tiny_state))
    code = main([str(a) for a in _predict(tmp_path, tmp_path / "other.pt")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("p2m: error:") and fragment in lines[0], err
    assert not (tmp_path / "out").exists()


def test_predicted_nan_vertices_are_never_written(tmp_path):
    from p2m.render import write_obj

    verts = np.zeros((3, 3))
    verts[1, 2] = np.nan
    with pytest.raises(ValueError, match="mesh.obj: not written, 1 of 3 vertices are NaN or infinite"):
        write_obj(tmp_path / "mesh.obj", verts, np.array([[0, 1, 2]]))
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_line_and_leaves_no_temporary(tiny_state, tmp_path, monkeypatch, capsys):
    """A checkpoint written on a full disk: one line naming it, no temporary left; the same through `p2m predict`
    writing its OBJ."""
    from p2m.checkpoint import save_checkpoint

    written = Path.write_bytes

    def full(self, data):
        written(self, data[: len(data) // 2])  # half of it, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    save_checkpoint(tmp_path / "ok.pt", tiny_state)
    argv = [str(a) for a in _predict(tmp_path, tmp_path / "ok.pt")]
    (tmp_path / "ckpt").mkdir()
    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError, match=f"^no space left on device writing {tmp_path / 'ckpt' / 'checkpoint.pt'}$"):
        save_checkpoint(tmp_path / "ckpt" / "checkpoint.pt", tiny_state)
    assert list((tmp_path / "ckpt").iterdir()) == []
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"p2m: error: no space left on device writing {tmp_path / 'out' / 'mesh.obj'}\n", err
    assert list((tmp_path / "out").iterdir()) == []


def test_a_dat_larger_than_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from p2m.data import datfile

    dat = _flat_dataset(tmp_path) / "00.dat"
    monkeypatch.setattr(datfile, "MAX_BYTES", 1000)
    with pytest.raises(datfile.DataError, match=rf"00.dat: {dat.stat().st_size} bytes, larger than the 1000"):
        datfile.read_dat(dat)


def test_an_interrupted_synth_leaves_nothing_at_out(tmp_path, monkeypatch):
    """Interrupted after every view is written, before the file lists: no dataset at --out, no temporary beside it;
    a second synth then writes it whole, and a third replaces it (a dataset synth wrote)."""
    synth = importlib.import_module("p2m.data.synth.generate")  # the package exports the function of that name

    def interrupted(*_args):
        raise KeyboardInterrupt

    out = tmp_path / "data"
    argv = ["data", "synth", "--out", str(out), "--models-per-category", "2", "--views", "2", "--categories", "lamp",
            "--workers", "1"]
    with monkeypatch.context() as patch:
        patch.setattr(synth, "_write_splits", interrupted)
        assert main(argv) == 130
    assert list(tmp_path.iterdir()) == []
    assert main(argv) == 0 and main(["data", "check", str(out)]) == 0
    assert main(argv) == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a dataset")
    assert main([*argv[:3], str(tmp_path / "mine"), *argv[4:]]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "not a dataset"


def _trials_of_wrong_schema(tmp: Path) -> Path:
    import pandas as pd

    pd.DataFrame({"name": ["a"], "loss": [1.0]}).to_parquet(tmp / "trials.parquet")
    return tmp


def _garbage_trials(tmp: Path) -> Path:
    (tmp / "trials.parquet").write_bytes(b"PAR1 not parquet at all")
    return tmp


def _results_part_of_wrong_schema(tmp: Path) -> Path:
    import pandas as pd

    (tmp / "results").mkdir()
    pd.DataFrame({"trial_id": ["a"], "loss": [1.0]}).to_parquet(tmp / "results" / "part-1-1.parquet")
    return tmp


TABLE_CASES = {
    "wrong-schema trials.parquet": (_trials_of_wrong_schema, "read_trials",
                                    "trials.parquet: not a table of this project (no column trial_id)"),
    "garbage trials.parquet": (_garbage_trials, "read_trials", "trials.parquet: not a readable Parquet file"),
    "wrong-schema results part": (_results_part_of_wrong_schema, "read_results",
                                  "part-1-1.parquet: not a table of this project (no column training_iteration)"),
}


@pytest.mark.parametrize("build, reader, fragment", list(TABLE_CASES.values()), ids=list(TABLE_CASES))
def test_bad_table_is_one_line_naming_the_file(build, reader, fragment, tmp_path):
    """A damaged trials table is a CorruptTableError, not the ResultsError of a missing one, which the analysis
    answers by rebuilding the table as if the driver had died."""
    import results.parquet as store

    with pytest.raises(ValueError, match="") as err:
        getattr(store, reader)(build(tmp_path))
    assert fragment in str(err.value) and "\n" not in str(err.value), err.value
    assert isinstance(err.value, store.CorruptTableError) == (reader == "read_trials")
