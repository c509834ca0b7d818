"""`p2m train`, `p2m predict` and `p2m evaluate` as a user runs them."""
import csv
import json
import subprocess
import sys

import numpy as np
from PIL import Image


def p2m(*args):
    return subprocess.run([sys.executable, "-m", "p2m.cli", *map(str, args)], capture_output=True, text=True, timeout=600)


def _obj_counts(path):
    lines = path.read_text().splitlines()
    return sum(line.startswith("v ") for line in lines), sum(line.startswith("f ") for line in lines)


def test_train_predict_evaluate(synth_dir, sample_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--profile", "tiny", "--data", synth_dir, "--out", run, "--epochs", 1, "--previews", 2,
            "--set", "optim.steps_per_epoch=2", "--set", "data.val_limit=4"]
    result = p2m(*args)
    assert result.returncode == 0, result.stderr
    assert "best epoch 1" in result.stdout
    for name in ("config.yaml", "metrics.jsonl", "best.pt", "checkpoint/checkpoint.pt", "curves.png"):
        assert (run / name).is_file(), name
    previews = sorted((run / "previews").glob("*.png"))
    assert len(previews) == 2
    assert Image.open(previews[0]).size[0] > 600
    meshes = sorted((run / "meshes").glob("*_s3.obj"))
    assert len(meshes) == 2 and _obj_counts(meshes[0]) == (2562, 5120)
    assert _obj_counts(meshes[0].with_name(meshes[0].name.replace("_s3", "_s1"))) == (162, 320)
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert row["epoch"] == 1 and row["val_views"] == 4

    again = p2m(*args)  # the run is there: refuse rather than overwrite
    assert again.returncode == 2 and "already holds a training run" in again.stderr
    resumed = p2m("train", "--out", run, "--resume", "--epochs", 2, "--previews", 0, "--data", synth_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    image = sorted(sample_dir.glob("02691156/*/00.png"))[0]
    out = tmp_path / "pred" / "plane.obj"
    result = p2m("predict", "--checkpoint", run / "best.pt", image, "--out", out, "--all-stages",
                 "--preview", tmp_path / "pred" / "plane.png")
    assert result.returncode == 0, result.stderr
    assert _obj_counts(out) == (2562, 5120) and _obj_counts(out.with_name("plane_s2.obj")) == (642, 1280)
    verts = np.array([line.split()[1:] for line in out.read_text().splitlines() if line.startswith("v ")], float)
    assert np.isfinite(verts).all() and (verts[:, 2] < 0).all()  # in front of the camera
    assert (tmp_path / "pred" / "plane.png").is_file()

    table = tmp_path / "real.csv"
    result = p2m("evaluate", "--checkpoint", run, "--data", sample_dir, "--split", "all", "--out", table, "--json")
    assert result.returncode == 0, result.stderr
    means = json.loads(result.stdout)
    rows = list(csv.DictReader(table.open()))
    assert means["views"] == len(rows) == 25
    assert means["s3_cd"] == sum(float(r["s3_cd"]) for r in rows) / 25


def test_bad_input_is_one_line(tmp_path, synth_dir):
    result = p2m("predict", "--checkpoint", tmp_path / "missing.pt", tmp_path / "x.png", "--out", tmp_path / "m.obj")
    assert result.returncode == 2 and "missing.pt: checkpoint not found" in result.stderr
    assert "Traceback" not in result.stderr
    result = p2m("train", "--profile", "tiny", "--data", synth_dir, "--out", tmp_path / "r", "--set", "loss.w1_edge=-1")
    assert result.returncode == 2 and "w1_edge" in result.stderr and "Traceback" not in result.stderr
    result = p2m("train", "--profile", "tiny", "--data", tmp_path / "nowhere", "--out", tmp_path / "r2")
    assert result.returncode == 2 and "nowhere" in result.stderr and "Traceback" not in result.stderr
