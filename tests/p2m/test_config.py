import dataclasses

import pytest

from p2m.config import (WEIGHT_KEYS, LossConfig, TrainConfig, apply_overrides, from_dict, load_config, profile_config,
                        save_config, weight_key)
from p2m.names import STAGES, TERMS


def test_defaults_are_the_published_weights():
    loss = LossConfig()
    w = [[loss.weight(s, t) for t in TERMS] for s in STAGES]
    assert w == [[1.0, 0.1, 0.5 * 0.2, 1.6e-4], [1.0, 0.1, 0.5, 1.6e-4], [1.0, 0.1, 0.5, 1.6e-4]]
    assert LossConfig().chamfer_opposite == 0.55
    assert len(WEIGHT_KEYS) == 12 and weight_key(3, "normal") == "w3_normal"


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(profile_config("tiny"), ["loss.w2_edge=0.3", "optim.lr=1e-4", "seed=5",
                                                   "model.mesh_pos=[0, 0, -0.7]"])
    path = tmp_path / "cfg.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert cfg.loss.w2_edge == 0.3 and cfg.optim.lr == 1e-4 and cfg.seed == 5 and cfg.model.mesh_pos == (0, 0, -0.7)


def test_yaml_starts_from_the_profile_it_names(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("profile: cpu\nloss:\n  w1_chamfer: 2\n")
    cfg = load_config(path)
    assert cfg.model == profile_config("cpu").model and cfg.loss.w1_chamfer == 2.0


@pytest.mark.parametrize("data, message", [
    ({"loss": {"w1_chamferr": 1}}, r"loss\.w1_chamferr: unknown key"),
    ({"optimizer": {}}, r"unknown key 'optimizer'"),
    ({"loss": {"w2_edge": -0.1}}, r"loss\.w2_edge must be >= 0, got -0\.1"),
    ({"data": {"gt_samples": 0}}, r"data\.gt_samples must be > 0, got 0"),
    ({"data": {"gt_samples": 1.5}}, r"data\.gt_samples: expected an integer"),
    ({"optim": {"amp": "yes"}}, r"optim\.amp: expected true or false"),
    ({"loss": {"edge_form": "huber"}}, r"loss\.edge_form must be one of"),
    ({"profile": "huge"}, r"profile must be one of"),
    ({"model": 3}, r"model must be a mapping"),
])
def test_bad_values_are_refused_with_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        from_dict(data, base=TrainConfig())


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)


def test_replace_is_how_a_search_sets_weights():
    cfg = TrainConfig()
    new = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, **{weight_key(1, t): 2.0 for t in TERMS}))
    assert [new.loss.weight(1, t) for t in TERMS] == [2.0] * 4
    with pytest.raises(ValueError, match="w1_edge must be >= 0"):
        dataclasses.replace(cfg.loss, w1_edge=-1.0)
    assert "loss.w3_normal" in cfg.flat()
