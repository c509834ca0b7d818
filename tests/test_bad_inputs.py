"""Issue 28, item 7: every bad input is refused in one line that names the file or key, with a non-zero exit.

Each row builds one bad input in ``tmp_path`` and returns the ``p2m`` command line that reads it (or, where no
command reads it, a callable that does); the row's fragment must appear in the one line of the error.
"""
from __future__ import annotations

import errno
import os
import struct
import zlib
from pathlib import Path

import pytest

from p2m.cli import main

TINY = ["--profile", "tiny"]


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
}


@pytest.mark.parametrize("build, fragment", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_one_line_naming_it(build, fragment, tmp_path, capsys):
    argv = [str(a) for a in build(tmp_path)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2m: error:"), err
    assert fragment in lines[0], err
    assert "Traceback" not in err
