"""The dependency direction: p2m never imports Ray; results never imports torch."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module, forbidden", [
    ("p2m", "ray"), ("p2m.data", "ray"), ("p2m.data.dataset", "ray"), ("p2m.data.synth", "ray"), ("p2m.cli", "ray"),
    ("p2m.train", "ray"), ("p2m.evaluate", "ray"), ("p2m.predict", "ray"),
    ("results", "torch"), ("results", "ray"), ("results.report", "torch"), ("results.report", "ray"),
    ("results.cli", "torch"), ("results.cli", "p2m"),
])
def test_module_does_not_import(module, forbidden):
    code = f"import sys, {module}; print({forbidden!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False", f"importing {module} pulled in {forbidden}"


def test_the_check_can_fail():
    code = "import sys, torch.utils.data; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"
