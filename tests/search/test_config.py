"""The search config and space: what is searched, the anchor, the baselines, and refused input."""
import pytest
import yaml

from p2m.config import WEIGHT_KEYS, LossConfig, profile_config
from search.cli import demo_config_path
from search.config import load_search_config, search_config_from_dict
from search.space import ANCHOR, PUBLISHED, Choice, LogUniform, apply_params, default_space


def test_default_space_searches_11_weights_around_the_published_ones_and_the_sample_counts():
    base = profile_config("cpu")
    space = default_space(base)
    weights = {k for k in space if k.startswith("loss.w")}
    assert weights == {f"loss.{k}" for k in WEIGHT_KEYS} - {ANCHOR}
    for key in weights:  # every published weight lies strictly inside its range, at least a decade from each end
        d = space[key]
        assert isinstance(d, LogUniform) and d.low * 10 <= PUBLISHED[key] * 1.0001 and PUBLISHED[key] * 10 <= d.high * 1.0001
    assert space["data.gt_samples"] == Choice((1000, 2000, 4000))
    assert "optim.lr" not in space and "optim.lr" in default_space(base, search_lr=True)


def test_apply_params_goes_through_the_config_checks():
    cfg = apply_params(profile_config("tiny"), {"loss.w2_edge": 0.3, "data.gt_samples": 2000})
    assert cfg.loss.w2_edge == 0.3 and cfg.data.gt_samples == 2000 and cfg.loss.w1_edge == 0.1
    with pytest.raises(ValueError, match="w2_edge must be >= 0"):
        apply_params(profile_config("tiny"), {"loss.w2_edge": -1.0})


def test_the_shipped_demo_config_is_valid_and_its_baselines_are_points():
    cfg = load_search_config(demo_config_path())
    assert cfg.base.profile == "tiny" and cfg.base.optim.max_epochs == cfg.max_t == 4
    points = cfg.points_to_evaluate()
    assert len(points) == 2
    assert apply_params(cfg.base, points[0]).loss == LossConfig()
    assert points[1]["loss.w1_laplacian"] == 0.5


def test_the_published_baseline_trains_with_the_reference_loss():
    cfg = search_config_from_dict({"base": {"profile": "cpu"}, "baselines": {"published": {}, "mine": {}}})
    published, mine = cfg.points_to_evaluate()
    assert apply_params(cfg.base, published).loss == LossConfig()  # every weight, the move term and the forms
    # a baseline may repeat an unsearched value the base config has; it is then a trial like any other
    same = search_config_from_dict({"baselines": {"mine": {"loss.w2_move": 0.033, "loss.w1_edge": 0.2}}})
    assert same.points_to_evaluate()[0]["loss.w1_edge"] == 0.2


@pytest.mark.parametrize("data, message", [
    ({"nmae": "x"}, "unknown key 'nmae'"),
    ({"search": {"num_sample": 3}}, "search.num_sample: unknown key"),
    ({"search": {"num_samples": "many"}}, "search.num_samples: expected int"),
    ({"scheduler": {"max_t": 2, "grace_period": 3}}, "grace_period \\(3\\) exceeds scheduler.max_t \\(2\\)"),
    ({"space": {"loss.w9_edge": {"log_uniform": [0.1, 1]}}}, "space.loss.w9_edge: not a config key"),
    ({"space": {"loss.w1_edge": {"log_uniform": [1, 0.1]}}}, "space.loss.w1_edge: log_uniform needs 0 < low < high"),
    ({"baselines": {"mine": {"loss.w1_edge": 50.0}}}, "baseline 'mine': loss.w1_edge=50.0 lies outside"),
    ({"baselines": {"mine": {"loss.w9_edge": 1.0}}}, "baseline 'mine': loss.w9_edge is not a config key"),
    ({"baselines": {"mine": {"loss.w2_move": 0.1}}}, "baseline 'mine': loss.w2_move=0.1 is not searched"),
    ({"base": {"loss": {"normal_form": "consistency"}}},
     "baseline 'published': loss.normal_form='p2m' is not searched, and the base config has 'consistency'"),
    ({"base": {"loss": {"w1_edge": -1}}}, "base: loss.w1_edge must be >= 0"),
    ({"resources": {"gpu": -0.5}}, "gpu >= 0"),
])
def test_bad_search_configs_name_the_key(tmp_path, data, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=message) as err:
        load_search_config(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_relative_dataset_paths_resolve_where_the_search_is_launched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = search_config_from_dict({"base": {"profile": "tiny", "data": {"root": "data/x"}}})
    assert cfg.base.data.root == str(tmp_path / "data" / "x")
