"""The GPU check (``make gpu-check``): bf16 autocast against float32, the chamfer on CUDA against the CPU, and two
Ray trials sharing one GPU. Skipped, each with its reason, where CUDA is absent."""
from __future__ import annotations

import warnings

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available())")]


def _batch(data, profile: str, batch: int, device):
    from p2m.config import apply_overrides, profile_config
    from p2m.data.dataset import P2MDataset, collate_p2m
    from p2m.data.layout import find_samples

    cfg = apply_overrides(profile_config(profile), [f"data.root={data}", f"optim.batch_size={batch}"])
    dataset = P2MDataset(find_samples(data, "train")[:batch], cfg.data.gt_samples, cfg.data.image_size)
    b = collate_p2m([dataset[i] for i in range(batch)])
    return cfg, {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}


@pytest.mark.parametrize("profile", ["tiny", "cpu", "paper"])
def test_a_bf16_training_step_agrees_with_float32(profile, synth_dir):
    """The same weights and batch: the loss of each term within bf16's precision, and the gradients aligned."""
    from p2m.loss import p2m_loss
    from p2m.train import build_model

    device = torch.device("cuda")
    cfg, b = _batch(synth_dir, profile, 4, device)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg).to(device)
    levels = [model.level(i) for i in range(3)]
    losses, grads = {}, {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            out = model(b["images"])
        res = p2m_loss(cfg.loss, out, levels, b["points"], b["normals"])
        res.total.backward()
        losses[name] = {"total": float(res.total), **{k: float(v) for k, v in res.terms.items()}}
        grads[name] = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    for key, value in losses["fp32"].items():
        assert losses["bf16"][key] == pytest.approx(value, rel=5e-2, abs=1e-6), key
    cosine = torch.nn.functional.cosine_similarity(grads["fp32"], grads["bf16"], dim=0)
    assert cosine > 0.95


def test_the_chamfer_on_cuda_equals_the_cpu_result():
    from p2m.geometry.chamfer import chamfer_distance

    g = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(4, 2466, 3, generator=g) * 0.3, torch.randn(4, 9000, 3, generator=g) * 0.3
    cpu = chamfer_distance(pred, gt)
    cuda = chamfer_distance(pred.cuda(), gt.cuda())
    torch.testing.assert_close(cuda.pred_to_gt.cpu(), cpu.pred_to_gt, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(cuda.gt_to_pred.cpu(), cpu.gt_to_pred, rtol=1e-4, atol=1e-7)
    assert (cuda.pred_nn.cpu() == cpu.pred_nn).float().mean() > 0.999  # ties aside, the same neighbours


def test_two_trials_share_one_gpu(synth_dir, tmp_path, ray_env, search_yaml, p2m_run):
    from results.parquet import read_results, read_trials

    cfg = search_yaml(tmp_path / "s.yaml", synth_dir, tmp_path / "exp", resources={"cpu": 1, "gpu": 0.5},
                      search={"num_samples": 2, "max_concurrent": 2}, scheduler={"type": "fifo", "max_t": 3},
                      baselines={"published": {}})
    result = p2m_run("search", "launch", "--config", cfg, "--quiet", env=ray_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = read_trials(tmp_path / "exp" / "t")
    assert len(trials) == 2 and (trials["iterations"] == 3).all()
    rows = read_results(tmp_path / "exp" / "t")
    assert set(rows["device"]) == {"cuda"}, set(rows["device"])
    rows["started"] = rows["timestamp"] - rows["time_total_s"]  # when the trial's training began
    spans = rows.groupby("trial_id").agg(start=("started", "min"), end=("timestamp", "max"))
    assert spans["start"].max() < spans["end"].min(), spans  # the two trials trained at once, on the one GPU
