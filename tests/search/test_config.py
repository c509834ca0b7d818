"""The search config and space: what is searched, the anchor, the baselines, and refused input."""
import dataclasses

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from p2m.config import LossConfig, profile_config
from p2m.names import WEIGHTS
from search.cli import demo_config_path
from search.config import load_experiment_config, load_search_config, search_config_from_dict
from search.space import ANCHOR, PUBLISHED, apply_params, default_space, space_from_dict


def test_default_space_searches_11_weights_around_the_published_ones_and_the_sample_counts():
    base = profile_config("cpu")
    space = default_space(base)
    weights = {k for k in space if k.startswith("loss.w")}
    assert weights == {w.param for w in WEIGHTS} - {ANCHOR}
    for key in weights:  # every published weight lies strictly inside its range, at least a decade from each end
        d = space[key]
        assert isinstance(d, FloatDistribution) and d.log
        assert d.low * 10 <= PUBLISHED[key] * 1.0001 and PUBLISHED[key] * 10 <= d.high * 1.0001
    assert space["data.gt_samples"] == CategoricalDistribution((1000, 2000, 4000))
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
    assert set(cfg.named_points()) == {"published", "uniform", "seed", "seed_all_stages", "learned"}
    assert len(cfg.side_points()) == 3
    assert apply_params(cfg.base, cfg.named_points()["learned"]).loss == LossConfig(weighting="learned")


def test_the_published_baseline_trains_with_the_reference_loss():
    cfg = search_config_from_dict({"base": {"profile": "cpu"}, "baselines": {"published": {}, "mine": {}}})
    published, mine = cfg.points_to_evaluate()
    assert apply_params(cfg.base, published).loss == LossConfig()  # every weight, the move term and the forms
    # a baseline may repeat an unsearched value the base config has; it is then a trial like any other
    same = search_config_from_dict({"baselines": {"mine": {"loss.w2_move": 0.033, "loss.w1_edge": 0.2}}})
    assert same.points_to_evaluate()[0]["loss.w1_edge"] == 0.2


# The seed reimplementation's loss, typed in from the issue that describes it (not from search.space): per stage
# [chamfer, normal, Laplacian, edge], and its stage weights [1, 0, 0]
SEED_TABLE = {1: [1, 0, 100, 100], 2: [1, 5, 100, 30], 3: [3, 10, 100, 10]}


@pytest.mark.parametrize("name, stage_weights", [("seed", [1, 0, 0]), ("seed_all_stages", [1, 1, 1])])
def test_the_seed_baselines_are_the_seed_reimplementations_loss(name, stage_weights):
    cfg = search_config_from_dict({"base": {"profile": "cpu"}, "baselines": {name: {}}})
    loss = apply_params(cfg.base, cfg.named_points()[name])
    for stage, row in SEED_TABLE.items():
        for term, value in zip(["chamfer", "normal", "laplacian", "edge"], row):
            assert getattr(loss.loss, f"w{stage}_{term}") == stage_weights[stage - 1] * value, (stage, term)
        assert getattr(loss.loss, f"w{stage}_move") == 0 and getattr(loss.loss, f"pred_samples{stage}") == 0
    assert loss.data.gt_samples == 4096 and loss.loss.chamfer_opposite == 1.0
    assert (loss.loss.edge_form, loss.loss.edge_target_length) == ("target", 0.0)
    assert (loss.loss.laplacian_form, loss.loss.normal_form) == ("smooth_sq", "vertex")
    # zeros, 100s, 4096 points and other forms lie outside the space: the trial runs beside the search
    assert cfg.points_to_evaluate() == [] and cfg.side_points() == [cfg.named_points()[name]]


def test_a_baseline_outside_the_space_runs_beside_the_search_and_one_inside_is_a_point():
    cfg = search_config_from_dict({"base": {"profile": "cpu"}, "baselines": {
        "published": {}, "wide": {"loss.w1_edge": 50.0}, "moved": {"loss.w2_move": 0.1},
        "inside": {"loss.w1_edge": 0.2, "loss.w2_move": 0.033}}})  # 0.033 is the base's: a point like any
    trials = cfg.baseline_trials()
    assert {name: t.in_space for name, t in trials.items()} == {"published": True, "wide": False, "moved": False,
                                                               "inside": True}
    assert cfg.points_to_evaluate() == [trials["published"].params, trials["inside"].params]
    assert set(trials["inside"].params) == set(cfg.space())  # a point of the space has its keys, no others
    assert apply_params(cfg.base, trials["wide"].params).loss.w1_edge == 50.0
    assert apply_params(cfg.base, trials["moved"].params).loss.w2_move == 0.1
    # the published baseline keeps the reference loss whatever the base config's forms: outside the space then
    other = search_config_from_dict({"base": {"loss": {"normal_form": "consistency"}}, "baselines": {"published": {}}})
    assert other.points_to_evaluate() == []
    assert apply_params(other.base, other.side_points()[0]).loss == LossConfig()


@pytest.mark.parametrize("data, message", [
    ({"nmae": "x"}, "unknown key 'nmae'"),
    ({"search": {"num_sample": 3}}, "search.num_sample: unknown key"),
    ({"search": {"num_samples": "many"}}, "search.num_samples: expected an integer"),
    ({"scheduler": {"max_t": 2, "grace_period": 3}}, "grace_period \\(3\\) exceeds scheduler.max_t \\(2\\)"),
    ({"space": {"loss.w9_edge": {"log_uniform": [0.1, 1]}}}, "space.loss.w9_edge: not a config key"),
    ({"space": {"loss.w1_edge": {"log_uniform": [1, 0.1]}}}, "space.loss.w1_edge: log_uniform needs 0 < low < high"),
    ({"baselines": {"mine": {"loss.w9_edge": 1.0}}}, "baseline 'mine': loss.w9_edge is not a config key"),
    ({"baselines": {"mine": {"loss.w1_edge": -1.0}}}, "baseline 'mine': loss.w1_edge must be >= 0"),
    ({"baselines": {"mine": {"loss.normal_form": "cosine"}}}, "baseline 'mine': loss.normal_form must be one of"),
    ({"base": {"loss": {"w1_edge": -1}}}, "base: loss.w1_edge must be >= 0"),
    ({"resources": {"gpu": -0.5}}, "gpu >= 0"),
    ({"search": {"objectives": ["val_s3_normal_consistency", "val_s3_cd"]}}, "objectives must be val_s3_cd followed"),
    ({"search": {"objectives": ["val_s3_cd", "val_s3_normals"]}}, "'val_s3_normals' is not a validation metric"),
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


def test_yaml_domains_become_optuna_distributions():
    space = space_from_dict({"loss.w2_edge": {"log_uniform": [0.01, 1]}, "loss.pred_samples3": {"choice": [0, 500]},
                             "loss.w1_normal": None}, profile_config("tiny"))
    assert space["loss.w2_edge"] == FloatDistribution(0.01, 1.0, log=True)
    assert space["loss.pred_samples3"] == CategoricalDistribution((0, 500))
    assert "loss.w1_normal" not in space


def test_max_t_is_the_trials_epochs_without_mutating_a_frozen_config():
    cfg = search_config_from_dict({"base": {"profile": "tiny"}, "scheduler": {"max_t": 3}})
    assert cfg.max_t == cfg.base.optim.max_epochs == 3
    assert cfg.with_max_t(5).base.optim.max_epochs == 5
    with pytest.raises(ValueError, match=r"base.optim.max_epochs \(3\) must equal scheduler.max_t \(7\)"):
        dataclasses.replace(cfg, max_t=7)


@pytest.mark.parametrize("damage, message", [
    (lambda text: text + "\n: [", "not valid YAML"),
    (lambda text: text.replace("max_concurrent:", "max_concurrency:"), "unknown field 'max_concurrency'"),
    (lambda text: text.replace("seed: 0\n", "seed: zero\n", 1), "seed: expected an integer, got 'zero'"),
    (lambda text: "\n".join(line for line in text.splitlines() if not line.startswith("rungs")), "missing field"),
    (lambda text: text.replace("  loss:", "  losses:", 1), r"base: unknown key 'losses'"),
])
def test_an_experiments_settings_are_read_strictly_with_one_line_errors(tmp_path, damage, message):
    path = tmp_path / "search_config.yaml"
    cfg = search_config_from_dict({"base": {"profile": "tiny"}})
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert load_experiment_config(path) == cfg  # what launch wrote reads back as it was
    path.write_text(damage(path.read_text()))
    with pytest.raises(ValueError, match=message) as err:
        load_experiment_config(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_a_trial_is_named_after_the_baseline_that_sets_the_most_of_its_keys():
    """``learned`` is the published point and one key more: its trial is ``learned``, a published one ``published``."""
    from search.space import baseline_name

    cfg = search_config_from_dict({"base": {"profile": "cpu"}, "baselines": {"published": {}, "learned": {}}})
    points = cfg.named_points()
    assert baseline_name(points["learned"], points) == "learned"
    assert baseline_name(points["published"], points) == "published"
    assert baseline_name({**points["published"], "loss.w1_edge": 0.2}, points) is None


def test_the_space_and_the_baselines_are_resolved_once_per_config(monkeypatch):
    import dataclasses

    from search import config as config_module

    calls = []
    real = config_module.space_from_dict
    monkeypatch.setattr(config_module, "space_from_dict", lambda *a: calls.append(a) or real(*a))
    cfg = config_module.SearchConfig(baselines={"published": {}, "mine": {"loss.w1_edge": 0.5}})
    for _ in range(3):
        cfg.space(), cfg.points_to_evaluate(), cfg.side_points(), cfg.named_points()
    assert len(calls) == 1
    cfg.space().clear()  # a caller's copy: the config's own space is untouched
    cfg.named_points()["mine"]["loss.w1_edge"] = 9.0  # ... and its own baselines' points
    assert cfg.named_points()["mine"]["loss.w1_edge"] == 0.5 and cfg.points_to_evaluate()[-1]["loss.w1_edge"] == 0.5
    assert len(cfg.space()) == len(real({}, cfg.base, False))
    wider = dataclasses.replace(cfg, search_lr=True)  # another config resolves its own
    assert "optim.lr" in wider.space() and "optim.lr" not in cfg.space() and len(calls) == 2
