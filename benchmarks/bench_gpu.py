"""The GPU figures (``make gpu-check`` runs this after ``tests/gpu/``): one table, where CUDA is; a one-line skip
elsewhere (exit status 0).

    python benchmarks/bench_gpu.py [--steps 20] [--data DIR]

Rows:
- ``bf16 vs fp32 <profile>``: one training step's loss of each profile (batch 8) under bf16 autocast against the
  same step, same weights and batch, in float32: the relative difference of the total and of the worst term;
  and the two steps' times.
- ``chamfer cuda vs cpu``: the chamfer of a batch (16 x 2466 predicted, 9000 GT points) on CUDA against the CPU
  result: the largest relative difference of the per-item distances, and both times.
- ``paper batch B``: training samples/s of the ``paper`` profile under AMP at batch 1, 8 and 16 (``--steps`` timed
  steps after 3 warm-up steps).
- ``paper, N trials on one GPU``: N processes (as N Ray trials with ``resources.gpu: 1/N``) each training the
  ``paper`` profile at batch 8 at the same time: their aggregate samples/s, and its ratio to one trial's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from _study import synth_data

PROFILES = ("tiny", "cpu", "paper")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--data", default=None, help="a dataset (default: a small synthetic one, made in a temp dir)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # batch of a sharing worker
    parser.add_argument("--start-at", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu: skipped, no CUDA device (torch.cuda.is_available() is False); nothing measured")
        return 0
    data = Path(args.data) if args.data else _data(Path(tempfile.gettempdir()) / "p2m-bench-gpu-data")
    if args.worker:
        print(json.dumps(_sharing_worker(data, args.worker, args.steps, args.start_at)))
        return 0
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}; bf16 {'supported' if torch.cuda.is_bf16_supported() else 'not supported'}")
    rows = []
    for profile in PROFILES:
        rows.append(_bf16_vs_fp32(data, profile))
    rows.append(_chamfer_cuda_vs_cpu())
    for batch in (1, 8, 16):
        rows.append(_throughput(data, "paper", batch, args.steps))
    single = None
    for n in (1, 2, 4):
        row = _sharing(data, n, args.steps)
        single = single or row["value"]
        row["note"] += f"; {row['value'] / single:.2f}x one trial's"
        rows.append(row)
    width = max(len(r["what"]) for r in rows)
    print(f"{'what':<{width}}  {'value':>10}  note")
    for r in rows:
        print(f"{r['what']:<{width}}  {r['value']:>10.4g}  {r['note']}")
    return 0


def _setup(data: Path, profile: str, batch: int, device: torch.device):
    from p2m.config import apply_overrides, profile_config
    from p2m.data.dataset import P2MDataset, collate_p2m
    from p2m.data.layout import find_samples
    from p2m.train import build_model, build_optimizer

    cfg = apply_overrides(profile_config(profile), [f"data.root={data}", f"optim.batch_size={batch}"])
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-init backbone note
        model = build_model(cfg).to(device)
    samples = find_samples(data, "train")
    if len(samples) < batch:
        raise SystemExit(f"{data}: {len(samples)} training samples, fewer than the batch of {batch}")
    dataset = P2MDataset(samples[:batch], cfg.data.gt_samples, cfg.data.image_size)
    batch_data = {k: v.to(device) if torch.is_tensor(v) else v
                  for k, v in collate_p2m([dataset[i] for i in range(batch)]).items()}
    return cfg, model, build_optimizer(cfg, model, device), batch_data


def _step(cfg, model, optimizer, b, dtype):
    from p2m.loss import p2m_loss

    levels = [model.level(i) for i in range(3)]
    with torch.autocast("cuda", dtype=dtype) if dtype else _null():
        out = model(b["images"])
    res = p2m_loss(cfg.loss, out, levels, b["points"], b["normals"])
    optimizer.zero_grad(set_to_none=True)
    res.total.backward()
    optimizer.step()
    return res


def _bf16_vs_fp32(data: Path, profile: str) -> dict:
    device = torch.device("cuda")
    results, times = {}, {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        cfg, model, opt, b = _setup(data, profile, 8, device)  # the same seed: the same weights and batch
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = _step(cfg, model, opt, b, dtype)
        torch.cuda.synchronize()
        times[name] = time.perf_counter() - t0
        results[name] = {"total": float(res.total), **{k: float(v) for k, v in res.terms.items()}}
    a, c = results["fp32"], results["bf16"]
    worst = max((abs(c[k] - a[k]) / max(abs(a[k]), 1e-12), k) for k in a if k != "total" and a[k] != 0)
    rel = abs(c["total"] - a["total"]) / abs(a["total"])
    return {"what": f"bf16 vs fp32 {profile}", "value": rel,
            "note": f"relative difference of the loss (worst term {worst[1]}: {worst[0]:.2%}); first step "
                    f"{1000 * times['fp32']:.0f} ms fp32, {1000 * times['bf16']:.0f} ms bf16"}


def _chamfer_cuda_vs_cpu() -> dict:
    from p2m.geometry.chamfer import chamfer_distance

    g = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(16, 2466, 3, generator=g) * 0.3, torch.randn(16, 9000, 3, generator=g) * 0.3
    t0 = time.perf_counter()
    cpu = chamfer_distance(pred, gt)
    t_cpu = time.perf_counter() - t0
    chamfer_distance(pred.cuda(), gt.cuda())  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    cuda = chamfer_distance(pred.cuda(), gt.cuda())
    torch.cuda.synchronize()
    t_cuda = time.perf_counter() - t0
    rel = max(float(((getattr(cuda, k).cpu() - getattr(cpu, k)).abs() / getattr(cpu, k).abs()).max())
              for k in ("pred_to_gt", "gt_to_pred"))
    same = float((cuda.pred_nn.cpu() == cpu.pred_nn).float().mean())
    return {"what": "chamfer cuda vs cpu", "value": rel,
            "note": f"largest relative difference of a distance; {same:.2%} of the nearest GT points the same; "
                    f"{1000 * t_cuda:.1f} ms on CUDA, {1000 * t_cpu:.0f} ms on the CPU"}


def _throughput(data: Path, profile: str, batch: int, steps: int) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cfg, model, opt, b = _setup(data, profile, batch, torch.device("cuda"))
    for _ in range(3):
        _step(cfg, model, opt, b, torch.bfloat16)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        _step(cfg, model, opt, b, torch.bfloat16)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"what": f"{profile} batch {batch}", "value": steps * batch / dt,
            "note": f"training samples/s under bf16 autocast ({steps} steps, {1000 * dt / steps:.0f} ms a step, "
                    f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB peak)"}


def _sharing(data: Path, n: int, steps: int) -> dict:
    start_at = time.time() + 60  # every worker builds its model first, then all start together
    procs = [subprocess.Popen([sys.executable, __file__, "--data", str(data), "--worker", "8", "--steps", str(steps),
                               "--start-at", str(start_at)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
             for _ in range(n)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a sharing worker failed ({[p.returncode for p in procs]})")
    late = sum(o["late"] for o in outs)
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return {"what": f"paper, {n} trial{'s' if n > 1 else ''} on one GPU", "value": sum(o["samples"] for o in outs) / wall,
            "note": "aggregate training samples/s, batch 8 each" + (f" ({late} worker(s) started late)" if late else "")}


def _sharing_worker(data: Path, batch: int, steps: int, start_at: float) -> dict:
    cfg, model, opt, b = _setup(data, "paper", batch, torch.device("cuda"))
    for _ in range(3):
        _step(cfg, model, opt, b, torch.bfloat16)
    torch.cuda.synchronize()
    late = time.time() > start_at
    time.sleep(max(0.0, start_at - time.time()))
    start = time.time()
    for _ in range(steps):
        _step(cfg, model, opt, b, torch.bfloat16)
    torch.cuda.synchronize()
    return {"start": start, "end": time.time(), "samples": steps * batch, "late": int(late)}


def _null():
    import contextlib

    return contextlib.nullcontext()


def _data(path: Path) -> Path:
    return synth_data(path, 4, 4, 3)


if __name__ == "__main__":
    sys.exit(main())
