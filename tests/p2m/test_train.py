"""Training: it learns, it resumes exactly, it reports, and it fails loudly."""
import json
import math

import pytest
import torch

from p2m import train
from p2m.checkpoint import load_checkpoint, load_model
from p2m.config import apply_overrides, profile_config
from p2m.train import NonFiniteLossError, fit


@pytest.fixture(scope="module")
def learn_dir(tmp_path_factory):
    """12 models x 4 views of every category: about 200 training views (24 validation views are used)."""
    from p2m.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("learn") / "data"
    generate(SynthConfig(out=str(out), models_per_category=12, views=4, seed=1, workers=2), progress=False)
    return out


def _tiny(root, *overrides):
    return apply_overrides(profile_config("tiny"), [f"data.root={root}", *overrides])


def test_tiny_profile_learns_and_every_stage_deforms(learn_dir, tmp_path):
    cfg = _tiny(learn_dir, "data.val_limit=24")
    result = fit(cfg, tmp_path / "run", progress=False, log=None)
    first, last = result.history[0], result.history[-1]
    print([round(row["val_s3_cd_x1000"], 2) for row in result.history])
    assert len(result.history) == cfg.optim.max_epochs
    assert last["val_s3_cd"] <= 0.5 * first["val_s3_cd"]
    assert last["val_s3_cd"] < last["val_s2_cd"] < last["val_s1_cd"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(1, cfg.optim.max_epochs + 1))


def test_resume_gives_the_uninterrupted_run(synth_dir, tmp_path):
    cfg = _tiny(synth_dir, "optim.steps_per_epoch=2", "data.val_limit=4", "optim.max_epochs=2", "loss.pred_samples2=300",
                "optim.ema_epochs=1")
    straight = fit(cfg, tmp_path / "straight", progress=False, log=None)
    half = apply_overrides(cfg, ["optim.max_epochs=1"])
    fit(half, tmp_path / "split", progress=False, log=None)
    resumed = fit(cfg, tmp_path / "split", resume_from=tmp_path / "split" / "checkpoint", progress=False, log=None)
    a = load_checkpoint(tmp_path / "straight" / "checkpoint")["model"]
    b = load_checkpoint(tmp_path / "split" / "checkpoint")["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    ema_a = load_checkpoint(tmp_path / "straight" / "checkpoint")["ema"]["module"]
    ema_b = load_checkpoint(tmp_path / "split" / "checkpoint")["ema"]["module"]
    for key in ema_a:  # the average of the weights resumes exactly too
        torch.testing.assert_close(ema_a[key], ema_b[key], rtol=0, atol=0, msg=key)
    # what validation measured, and what load_model and best.pt give, is the average, not the last weights
    model, _ = load_model(tmp_path / "split" / "checkpoint")
    torch.testing.assert_close(model.state_dict()["blocks.2.out.w_self.weight"], ema_b["blocks.2.out.w_self.weight"])
    assert not torch.equal(ema_b["blocks.2.out.w_self.weight"], b["blocks.2.out.w_self.weight"])
    drop = ("epoch_seconds", "train_samples_per_second")
    assert [{k: v for k, v in row.items() if k not in drop} for row in resumed.history] == \
           [{k: v for k, v in row.items() if k not in drop} for row in straight.history]



def test_learned_weights_train_are_logged_every_epoch_and_resume_exactly(synth_dir, tmp_path):
    cfg = _tiny(synth_dir, "optim.steps_per_epoch=3", "data.val_limit=4", "optim.max_epochs=2", "loss.weighting=learned")
    straight = fit(cfg, tmp_path / "straight", progress=False, log=None)
    columns = ["learned_w1_chamfer", "learned_w2_chamfer", "learned_w3_chamfer"]
    weights = [[row[c] for c in columns] for row in straight.history]
    # they start at the configured chamfer weights (1 each), and each step of Adam at loss.weighting_lr moves them
    for epoch, row in enumerate(weights, start=1):
        for w in row:
            assert 0 < abs(math.log(w)) <= 3 * epoch * cfg.loss.weighting_lr * 1.01, (epoch, row)
    assert weights[0] != weights[1]
    state = load_checkpoint(tmp_path / "straight" / "checkpoint")
    torch.testing.assert_close(0.5 * torch.exp(-state["loss_weights"]["log_vars"]), torch.tensor(weights[1]))
    fit(apply_overrides(cfg, ["optim.max_epochs=1"]), tmp_path / "split", progress=False, log=None)
    resumed = fit(cfg, tmp_path / "split", resume_from=tmp_path / "split" / "checkpoint", progress=False, log=None)
    assert [[row[c] for c in columns] for row in resumed.history] == weights
    torch.testing.assert_close(load_checkpoint(tmp_path / "split" / "checkpoint")["loss_weights"]["log_vars"],
                               state["loss_weights"]["log_vars"], rtol=0, atol=0)


def test_a_resume_may_change_the_listed_weights_and_keeps_model_optimizer_and_epoch(synth_dir, tmp_path):
    """What a population scheduler does: continue a checkpoint under new loss weights (and learning rate)."""
    cfg = _tiny(synth_dir, "optim.steps_per_epoch=2", "data.val_limit=4", "optim.max_epochs=1")
    fit(cfg, tmp_path / "a", progress=False, log=None)
    changed = apply_overrides(cfg, ["optim.max_epochs=2", "loss.w2_edge=0.7", "optim.lr=1e-4"])
    with pytest.raises(ValueError, match=r"different config \(loss.w2_edge, optim.lr\)"):
        fit(changed, tmp_path / "b", resume_from=tmp_path / "a" / "checkpoint", progress=False, log=None)
    result = fit(changed, tmp_path / "c", resume_from=tmp_path / "a" / "checkpoint", progress=False, log=None,
                 changing=("loss.w2_edge", "optim.lr"))
    assert [row["epoch"] for row in result.history] == [1, 2]  # it went on from epoch 1
    state = load_checkpoint(tmp_path / "c" / "checkpoint")
    assert state["config"]["loss"]["w2_edge"] == 0.7
    assert all(float(s["step"]) == 4 for s in state["optimizer"]["state"].values())  # Adam's moments went on
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4 * train.lr_factor(changed, 2)(4))
    assert result.history[1]["lr"] == pytest.approx(1e-4 * train.lr_factor(changed, 2)(4))

def test_a_longer_resume_continues_the_schedule_instead_of_restarting_it(synth_dir, tmp_path):
    """Resuming a 2-epoch cosine run for 4 epochs keeps the schedule's horizon: the learning rate stays at the
    floor it reached (5%) rather than jumping back up the cosine of a 4-epoch run."""
    cfg = _tiny(synth_dir, "optim.steps_per_epoch=2", "data.val_limit=2", "optim.warmup_steps=0",
                "optim.lr_schedule=cosine", "optim.max_epochs=2")
    first = fit(cfg, tmp_path / "run", progress=False, log=None)
    longer = fit(apply_overrides(cfg, ["optim.max_epochs=4"]), tmp_path / "run",
                 resume_from=tmp_path / "run" / "checkpoint", progress=False, log=None)
    lrs = [row["lr"] for row in longer.history]
    floor = 0.05 * cfg.optim.lr
    assert lrs[:2] == [row["lr"] for row in first.history]
    assert lrs[1] == pytest.approx(floor) and lrs[2] == pytest.approx(floor) and lrs[3] == pytest.approx(floor)


def test_on_epoch_gets_metrics_and_a_loadable_checkpoint(synth_dir, tmp_path):
    cfg = _tiny(synth_dir, "optim.steps_per_epoch=1", "data.val_limit=2", "optim.max_epochs=2")
    seen = []

    def hook(metrics, checkpoint_dir, views):
        state = load_checkpoint(checkpoint_dir)
        seen.append((metrics["epoch"], state["epoch"], sorted(metrics)))
        assert len(views) == metrics["val_views"] == 2 and views[0]["s3_cd"] > 0

    fit(cfg, tmp_path / "run", on_epoch=hook, progress=False, log=None)
    assert [(e, s) for e, s, _ in seen] == [(1, 1), (2, 2)]
    keys = seen[0][2]
    for stage in (1, 2, 3):
        for name in ("cd", "cd_x1000", "f_tau", "f_2tau", "normal_consistency", "smoothness"):
            assert f"val_s{stage}_{name}" in keys
        for term in ("chamfer", "edge", "laplacian", "normal", "move"):
            assert f"train_s{stage}_{term}" in keys
    model, saved = load_model(tmp_path / "run" / "best.pt")
    assert saved == cfg
    assert not model.training


def test_nonfinite_loss_is_an_error_naming_epoch_and_terms(synth_dir, tmp_path, monkeypatch):
    cfg = _tiny(synth_dir, "optim.steps_per_epoch=3", "data.val_limit=2", "optim.max_epochs=1")
    real = train.p2m_loss
    calls = []

    def poisoned(*args, **kwargs):
        res = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            return res._replace(total=res.total * math.nan)
        return res

    monkeypatch.setattr(train, "p2m_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 1 step 2 \(s1_chamfer="):
        fit(cfg, tmp_path / "run", progress=False, log=None)
    assert not (tmp_path / "run" / "checkpoint" / "checkpoint.pt").exists()


def test_bad_checkpoints_and_config_changes_are_refused(synth_dir, tmp_path):
    cfg = _tiny(synth_dir, "optim.steps_per_epoch=1", "data.val_limit=2", "optim.max_epochs=1")
    fit(cfg, tmp_path / "run", progress=False, log=None)
    with pytest.raises(ValueError, match=r"different config \(loss.w2_edge\)"):
        fit(apply_overrides(cfg, ["loss.w2_edge=0.3", "optim.max_epochs=2"]), tmp_path / "run",
            resume_from=tmp_path / "run" / "checkpoint", progress=False, log=None)
    longer = fit(apply_overrides(cfg, ["optim.max_epochs=2"]), tmp_path / "run",
                 resume_from=tmp_path / "run" / "checkpoint", progress=False, log=None)
    assert [row["epoch"] for row in longer.history] == [1, 2]
    broken = tmp_path / "broken.pt"
    broken.write_bytes((tmp_path / "run" / "best.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="broken.pt: not a readable checkpoint"):
        load_checkpoint(broken)
    with pytest.raises(ValueError, match="nothing.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.pt")
    with pytest.raises(ValueError, match="data.root: no dataset given"):
        fit(profile_config("tiny"), tmp_path / "none", progress=False, log=None)
