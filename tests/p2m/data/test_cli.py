"""`p2m data ...` as a user runs it: a real subprocess, exit codes, one-line errors."""
import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def p2m(*args):
    return subprocess.run([sys.executable, "-m", "p2m.cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_check_counts_a_valid_dataset(synth_dir):
    result = p2m("data", "check", synth_dir)
    assert result.returncode == 0, result.stderr
    assert "airplane" in result.stdout and "all samples valid" in result.stdout
    report = json.loads(p2m("data", "check", synth_dir, "--json").stdout)
    assert report["ok"] and report["counts"]["val"]["chair"] == 2


@pytest.fixture
def broken_copy(sample_dir, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(sample_dir / "02691156", root / "02691156")
    return root


def _one_error(result, name, what):
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("p2m: error:")]
    assert len(errors) == 1 and name in errors[0] and what in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_truncated_dat(broken_copy):
    dat = sorted(broken_copy.glob("*/*/01.dat"))[0]
    dat.write_bytes(dat.read_bytes()[:5000])
    _one_error(p2m("data", "check", broken_copy), str(dat), "truncated")


def test_wrong_shape_dat(broken_copy):
    dat = sorted(broken_copy.glob("*/*/02.dat"))[1]
    dat.write_bytes(pickle.dumps(np.zeros((100, 3), np.float32), protocol=2))
    _one_error(p2m("data", "check", broken_copy), str(dat), "expected shape (N, 6), got (100, 3)")


def test_missing_image(broken_copy):
    png = sorted(broken_copy.glob("*/*/03.png"))[2]
    png.unlink()
    _one_error(p2m("data", "check", broken_copy), str(png), "image file is missing")


def test_non_square_image(broken_copy):
    png = sorted(broken_copy.glob("*/*/00.png"))[0]
    Image.new("RGBA", (137, 120)).save(png)
    _one_error(p2m("data", "check", broken_copy), str(png), "expected a square image, got 137x120")


def test_hostile_dat_is_reported_not_run(broken_copy, tmp_path):
    marker = tmp_path / "pwned"
    dat = sorted(broken_copy.glob("*/*/04.dat"))[0]
    dat.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    _one_error(p2m("data", "check", broken_copy), str(dat), "refused global os.system")
    assert not marker.exists()


def test_missing_dataset_is_one_line_and_nonzero(tmp_path):
    result = p2m("data", "check", tmp_path / "nope")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_preview_writes_a_png(synth_dir, tmp_path):
    out = tmp_path / "sheet.png"
    result = p2m("data", "preview", synth_dir, "--split", "train", "--count", "6", "--out", out)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 400


def test_synth_then_check(tmp_path):
    out = tmp_path / "d"
    result = p2m("data", "synth", "--out", out, "--models-per-category", "1", "--views", "2", "--categories", "lamp", "car", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "wrote 4 views of 2 models" in result.stdout
    check = p2m("data", "check", out)
    assert check.returncode == 0, check.stderr
    assert "warning:" in check.stdout and "split 'val' is empty" in check.stdout  # 1 model per category: all train


def test_synth_rejects_bad_arguments(tmp_path):
    result = p2m("data", "synth", "--out", tmp_path, "--views", "0")
    assert result.returncode == 2 and "views must be >= 1" in result.stderr
