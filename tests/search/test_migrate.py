"""``p2m search migrate``: an experiment of the format before issue 14, written here by hand, brought up to date."""
import json

import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from p2m.cli import main
from p2m.codec import to_plain
from p2m.names import FIXED_WEIGHTS, SETTINGS_FILE, SPACE_FILE
from results.lease import LEASE_FILE
from results.space import read_space
from search.config import SearchConfig, load_experiment_config


def _old_experiment(tmp_path):
    """Settings without rungs and val_per_view, base first, the model's template_levels and no move weights;
    the space in its own JSON form."""
    exp = tmp_path / "old"
    exp.mkdir()
    data = to_plain(SearchConfig(scheduler="asha", grace_period=1, reduction_factor=3).with_max_t(6).to_dict())
    del data["rungs"], data["val_per_view"]
    data["base"]["model"]["template_levels"] = 3
    for w in FIXED_WEIGHTS:
        del data["base"]["loss"][w.field]
    data = {"base": data.pop("base"), **data}
    (exp / SETTINGS_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    (exp / SPACE_FILE).write_text(json.dumps({"loss.w1_edge": {"log_uniform": [0.003, 3.0]},
                                              "data.gt_samples": {"choice": [1000, 2000]}}))
    return exp


def test_an_old_experiment_is_brought_up_to_date_once(tmp_path, capsys):
    exp = _old_experiment(tmp_path)
    assert main(["search", "migrate", str(exp)]) == 0
    out = capsys.readouterr().out
    assert f"{exp / SETTINGS_FILE}: rungs [1.0, 3.0], no move term recorded" in out
    assert "val_per_view at their defaults" in out and f"{exp / SPACE_FILE}: 2 distributions" in out
    cfg = load_experiment_config(exp / SETTINGS_FILE)
    assert cfg.rungs == (1.0, 3.0)  # ASHA's milestones for grace 1, factor 3, max_t 6: 1 and 3 (9 > 6)
    assert cfg.val_per_view is False and all(getattr(cfg.base.loss, w.field) == 0.0 for w in FIXED_WEIGHTS)
    assert read_space(exp) == {"loss.w1_edge": FloatDistribution(0.003, 3.0, log=True),
                               "data.gt_samples": CategoricalDistribution((1000, 2000))}
    before = {p.name: p.read_bytes() for p in exp.iterdir()}
    assert main(["search", "migrate", str(exp)]) == 0
    assert capsys.readouterr().out.strip() == f"{exp}: already current"
    assert {p.name: p.read_bytes() for p in exp.iterdir()} == before and not (exp / LEASE_FILE).exists()


def test_what_is_not_an_experiment_is_one_line(tmp_path, capsys):
    assert main(["search", "migrate", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"p2m: error: {tmp_path}: not an experiment (no {SETTINGS_FILE})"
    (tmp_path / SETTINGS_FILE).write_text("name: x\n")
    assert main(["search", "migrate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"p2m: error: {tmp_path / SETTINGS_FILE}: no base.model and base.loss sections: not the settings " \
                  "of a search"
    assert (tmp_path / SETTINGS_FILE).read_text() == "name: x\n"

    (tmp_path / SETTINGS_FILE).write_text("scheduler: asha\nmax_t: 6\nbase: {model: {}, loss: {}}\n")
    assert main(["search", "migrate", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"p2m: error: {tmp_path / SETTINGS_FILE}: missing field 'grace_period'"
