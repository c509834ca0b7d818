"""The dependency direction, over every module of each package (walked, not listed by hand): p2m never imports
Ray, search or results; results never imports torch, Ray or search, and of p2m only its import-free modules; the
I/O layer of results (its modules outside results.analysis) never imports the analysis."""
import json
import subprocess
import sys

import pytest

# what each package may not have in sys.modules after importing every one of its modules
FORBIDDEN = {"p2m": ("ray", "search", "results"), "results": ("torch", "ray", "search")}
# the p2m modules results may use: the shared names, the atomic writes and the config codec, which import no third
# party, and the limited YAML reader (PyYAML only)
RESULTS_MAY_USE = {"p2m", "p2m.names", "p2m.atomic", "p2m.yamlio", "p2m.codec"}

WALK = """
import importlib, json, pkgutil, sys
package = importlib.import_module({package!r})
names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
print(json.dumps({{"modules": names, "loaded": sorted(sys.modules)}}))
"""


def _walk(package: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WALK.format(package=package)], capture_output=True, text=True,
                         check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_of_the_package_imports_what_it_must_not(package):
    walked = _walk(package)
    assert len(walked["modules"]) >= 8  # the walk really went through the package
    loaded = set(walked["loaded"])
    for forbidden in FORBIDDEN[package]:
        assert not {m for m in loaded if m == forbidden or m.startswith(forbidden + ".")}, \
            f"importing every module of {package} pulled in {forbidden}"
    if package == "results":
        assert {m for m in loaded if m.split(".")[0] == "p2m"} <= RESULTS_MAY_USE


IO_LAYER = """
import importlib, json, pkgutil, sys
import results
names = [m.name for m in pkgutil.iter_modules(results.__path__, "results.") if not m.ispkg]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""


def test_the_io_layer_of_results_never_imports_the_analysis():
    out = subprocess.run([sys.executable, "-c", IO_LAYER], capture_output=True, text=True, check=True, timeout=300)
    walked = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"results.storage", "results.parquet", "results.schema", "results.lease"} <= set(walked["modules"])
    assert not [m for m in walked["modules"] if m.startswith("results.analysis")]
    pulled = [m for m in walked["loaded"] if m == "results.analysis" or m.startswith("results.analysis.")]
    assert not pulled, f"the I/O layer of results imported the analysis: {pulled}"


def test_the_names_module_imports_only_the_standard_library():
    code = ("import json, sys; before = set(sys.modules); import p2m.names; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    new = {m.split(".")[0] for m in json.loads(out)} - {"p2m"}
    assert new <= set(sys.stdlib_module_names), new - set(sys.stdlib_module_names)


def test_the_check_can_fail():
    code = "import sys, torch.utils.data; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"
