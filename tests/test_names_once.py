"""Every shared name is defined once, in ``p2m/names.py``: a second definition elsewhere fails here.

The project's code is read by its syntax tree, not its text, so a comment or a docstring may still mention a name.
What counts as a second definition:
- a string equal to a file name of ``p2m.names`` (an experiment's, a run's, a dataset's), anywhere in the code and
  the benchmark scripts;
- a string equal to a scheduler's or a search algorithm's name, or to an Optuna direction, in the packages (the
  benchmark scripts write search configs as a user does, in the user's words);
- a string equal to a key training reports each epoch (``epoch``, ``train_loss``, ...; not ``lr``, a config field
  too), except as a picture's text (``xlabel="epoch"``);
- a string equal to a loss term's form other than the reference's (``smooth_sq``, ``vertex``, ...), in the packages;
- a string equal to a column of Ray's bookkeeping a result row keeps (``time_total_s``, ``hostname``, ...), in the
  packages, outside ``results/schema.py``, which defines the tables' columns;
- a metric's direction or change unit written down: ``("f_tau", False)``, ``{"cd_x1000": True}``,
  ``{"cd_x1000": (True, True)}``, or a collection of metric names bound to a name that says which way is better.

Tests are not scanned: they spell the on-disk layout out on purpose, an independent reference of what users find.
"""
import ast
from pathlib import Path

import pytest

from p2m import names
from results import schema

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("p2m", "search", "results")
FROZEN = {"benchmarks/study_third_edition.py"}  # a study's script as it ran; its committed outputs cite it
NAMES_MODULE = "p2m/names.py"
SCHEMA_MODULE = "results/schema.py"
SHOWN = {"xlabel", "ylabel", "title", "label"}  # keyword arguments whose strings are a picture's text


def _sources(folders, definer=NAMES_MODULE):
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in (NAMES_MODULE, definer) and rel not in FROZEN:
                yield rel, ast.parse(path.read_text(), rel)


def _strings(tree):
    shown = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg in SHOWN}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in shown:
            yield node


FILE_NAMES = {value for key, value in vars(names).items()
              if key.isupper() and key.endswith("_FILE") and isinstance(value, str) and "." in value}
WORDS = {names.ASHA, names.FIFO, names.PBT, names.PB2} | set(names.ALGORITHMS) | set(names.DIRECTIONS.values())
REPORTED = set(names.REPORTED) - {names.LR}  # "lr" is a config field's name too (optim.lr)
FORMS = (set(names.EDGE_FORMS) | set(names.LAPLACIAN_FORMS) | set(names.NORMAL_FORMS)) - {names.FORM_P2M}
RAY_COLUMNS = set(schema.RAY_KEYS) - {schema.PID}  # a lease's field too


def test_the_names_module_defines_what_this_test_looks_for():
    assert {"trials.parquet", "synth_meta.json", "checkpoint.pt", "weights.pt"} <= FILE_NAMES
    assert {"asha", "fifo", "pbt", "pb2", "tpe", "random", "minimize", "maximize"} <= WORDS
    assert {"epoch", "train_loss", "val_views", "epoch_seconds", "train_samples_per_second"} <= REPORTED
    assert FORMS == {"target", "smooth", "smooth_sq", "consistency", "vertex"}
    assert {"time_total_s", "timestamp", "hostname", "node_id"} <= RAY_COLUMNS


@pytest.mark.parametrize("folders, words, definer", [
    (PACKAGES + ("benchmarks",), FILE_NAMES, NAMES_MODULE), (PACKAGES, WORDS, NAMES_MODULE),
    (PACKAGES + ("benchmarks",), REPORTED, NAMES_MODULE), (PACKAGES, FORMS, NAMES_MODULE),
    (PACKAGES, RAY_COLUMNS, SCHEMA_MODULE)],
    ids=["file names", "scheduler, algorithm and direction names", "reported keys", "loss forms", "Ray's columns"])
def test_a_name_is_spelled_only_in_the_names_module(folders, words, definer):
    found = [f"{rel}:{node.lineno}: {node.value!r}" for rel, tree in _sources(folders, definer)
             for node in _strings(tree) if node.value in words]
    assert not found, f"defined again (import it from {definer}):\n" + "\n".join(found)


def test_a_pictures_text_is_not_a_definition():
    tree = ast.parse('ax.set(xlabel="epoch", title="train_loss")\nrow = {"epoch": 1}')
    assert [node.value for node in _strings(tree)] == ["epoch"]


def _is_metric(node) -> bool:
    return isinstance(node, ast.Constant) and node.value in names.METRICS


def _is_flag(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, bool) or (
        isinstance(node, ast.Tuple) and bool(node.elts) and _is_flag(node.elts[0]))


def _direction_literals(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Tuple) and len(node.elts) == 2 and _is_metric(node.elts[0]) and _is_flag(node.elts[1]):
            yield node
        elif isinstance(node, ast.Dict) and any(_is_metric(k) and _is_flag(v) for k, v in zip(node.keys, node.values)):
            yield node
        elif isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List, ast.Set)) and any(
                isinstance(t, ast.Name) and any(w in t.id.upper() for w in ("BETTER", "HIGHER", "LOWER", "MAXIMI",
                                                                           "MINIMI")) for t in node.targets) \
                and sum(map(_is_metric, node.value.elts)) >= 1:
            yield node


def test_a_metric_direction_comes_from_the_metric_table():
    found = [f"{rel}:{node.lineno}" for rel, tree in _sources(PACKAGES + ("benchmarks",))
             for node in _direction_literals(tree)]
    assert not found, "a metric's direction written again (use p2m.names.metric_row):\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    'COMPARED = (("cd_x1000", True), ("f_tau", False))',
    'COMPARED = {"cd_x1000": (True, True), "f_tau": (False, False)}',
    'HIGHER_IS_BETTER = ("f_tau", "normal_consistency")',
    'SMALLER = {"smoothness": True}',
])
def test_the_direction_check_catches_each_form(source):
    assert list(_direction_literals(ast.parse(source)))


def test_the_derived_tables_agree_with_the_metric_table():
    assert names.HIGHER_IS_BETTER == ("f_tau", "f_2tau", "normal_consistency")  # hand-written: the table's meaning
    assert [names.val_metric_mode(names.val_column(3, m)) for m in ("cd", "f_tau", "smoothness")] == ["min", "max",
                                                                                                     "min"]
    from results.analysis.paired import COMPARED as PAIRED
    from results.analysis.tables import COMPARED
    assert dict(COMPARED) == {"cd_x1000": True, "f_tau": False, "f_2tau": False, "normal_consistency": False,
                              "smoothness": True}
    assert PAIRED == {"cd_x1000": (True, True), "f_tau": (False, False), "f_2tau": (False, False),
                      "normal_consistency": (False, False)}
