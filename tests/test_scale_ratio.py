"""benchmarks/scale_ratio.py: the ratio of two sides' driver CPU per result and its interval match scipy's Welch
test on the logarithms; the runs are read from compare_scale.sh's files, across waves; a side with one
run, or a run without its figure, is refused in one line."""
from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scale_ratio.py"
spec = importlib.util.spec_from_file_location("scale_ratio", SCRIPT)
scale_ratio = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale_ratio)


def test_the_interval_is_scipys_welch_interval_on_the_logarithms():
    base, new = [13.6, 14.1, 13.2], [14.3, 13.9, 15.0, 14.4]
    ratio, low, high = scale_ratio.log_ratio_interval(base, new)
    welch = stats.ttest_ind(np.log(new), np.log(base), equal_var=False).confidence_interval(0.95)
    assert ratio == pytest.approx(math.exp(np.log(new).mean() - np.log(base).mean()), rel=1e-12)
    assert (low, high) == pytest.approx((math.exp(welch.low), math.exp(welch.high)), rel=1e-9)


def _run_file(folder: Path, label: str, figure: float | None) -> None:
    line = "" if figure is None else f"  driver CPU per result (ms)      {figure:.3f}      <= 5  NOT met\n"
    (folder / f"{label}.txt").write_text(f"== {label}: commit abc\nsearch: 10 trials\n{line}ended, exit 0\n")


def test_the_script_reads_each_sides_runs_from_every_wave_and_gives_a_verdict(tmp_path):
    waves = [tmp_path / "wave1", tmp_path / "wave2"]
    for wave in waves:
        wave.mkdir()
    for wave, label, figure in [(0, "before1", 10.0), (0, "before2", 10.4), (1, "before3", 9.8), (0, "after1", 10.1),
                                (1, "after2", 10.3), (1, "after3", 9.9), (1, "afterall", 50.0)]:
        _run_file(waves[wave], label, figure)
    (waves[0] / "after1.err").write_text("")
    done = subprocess.run([sys.executable, SCRIPT, "before", "after", *waves, "--at-most", "1.10"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("before: 3 runs, driver CPU per result (ms): before1 10.000, before2 10.400, before3")
    assert lines[1].startswith("after: 3 runs")  # afterall is not a run of 'after'
    ratio, low, high = scale_ratio.log_ratio_interval([10.0, 10.4, 9.8], [10.1, 10.3, 9.9])
    assert lines[2] == f"ratio after/before: {ratio:.3f}, 95% interval {low:.3f} to {high:.3f} " \
                       f"(Welch t on the logarithms of the runs' figures)"
    assert lines[3] == f"verdict against at most 1.10: {'no worse' if high <= 1.10 else 'not shown'}"


@pytest.mark.parametrize("labels, message", [
    ({"before1": 10.0, "after1": 10.0, "after2": 10.0}, "side 'before' has 1 run(s)"),
    ({"before1": 10.0, "before2": None, "after1": 10.0, "after2": 10.0}, "before2.txt: no 'driver CPU per result"),
])
def test_a_side_with_one_run_or_a_run_without_its_figure_is_refused(tmp_path, labels, message):
    for label, figure in labels.items():
        _run_file(tmp_path, label, figure)
    done = subprocess.run([sys.executable, SCRIPT, "before", "after", tmp_path], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
