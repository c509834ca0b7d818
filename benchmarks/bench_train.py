"""Training-step throughput (batch 1 vs batch 8) and the chamfer's nearest-neighbour backends vs a naive
torch.cdist chamfer: "chunked" (exact distances in 64 MiB chunks, the torch backend), "kdtree" (scipy's
KD-tree, what "auto" uses on CPU without pytorch3d) and "naive" (the full matrix kept for backward).

    python benchmarks/bench_train.py [--profile cpu] [--steps 6] [--device cpu|cuda]
    python benchmarks/bench_train.py --chamfer-only

Each chamfer variant runs in a fresh subprocess so its peak memory is its own: on CPU the peak resident
set size (ru_maxrss) minus the resident size just before the call; on CUDA max_memory_allocated.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings

import torch

B, V, P = 16, 2466, 9000  # batch, stage-3 vertices of the authors' template, GT points
VARIANTS = ("chunked", "kdtree", "naive")
BACKENDS = {"chunked": "torch", "kdtree": "kdtree"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per batch size (after 2 warm-up steps)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chamfer-only", action="store_true")
    parser.add_argument("--chamfer-variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.chamfer_variant:
        print(json.dumps(_chamfer_once(args.chamfer_variant, args.device)))
        return
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "no GPU"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.chamfer_only:
        _train_steps(args.profile, args.steps, args.device)
    _chamfer(args.device)


def _train_steps(profile: str, steps: int, device: str) -> None:
    from p2m.config import profile_config
    from p2m.loss import p2m_loss
    from p2m.model import Pixel2Mesh

    cfg = profile_config(profile)
    S = cfg.data.image_size
    rates = {}
    for batch in (1, 8):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = Pixel2Mesh(cfg.model, S).to(device)
        levels = [model.level(i) for i in range(3)]
        opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
        images = torch.randn(batch, 3, S, S, device=device)
        gt = torch.randn(batch, cfg.data.gt_samples, 3, device=device) * 0.15 + torch.tensor([0, 0, -0.8], device=device)
        gtn = torch.nn.functional.normalize(torch.randn_like(gt), dim=-1)
        amp = device.startswith("cuda") and cfg.optim.amp
        dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16

        def step():
            with torch.autocast("cuda", dtype=dtype, enabled=amp):
                out = model(images)
            loss = p2m_loss(cfg.loss, out, levels, gt, gtn).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(2):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        seconds = time.perf_counter() - start
        rates[batch] = batch * steps / seconds
        print(f"train  profile={profile} batch={batch}: {steps} steps in {seconds:.2f} s = {rates[batch]:.1f} samples/s "
              f"({S} px, {cfg.data.gt_samples} GT points, hidden {cfg.model.hidden_dim} x {cfg.model.layers_per_block} layers)")
    print(f"train  batch 8 vs batch 1: {rates[8] / rates[1]:.2f}x samples/s (goal >= 1.8x)")


def _chamfer(device: str) -> None:
    res = {}
    variants = VARIANTS if device == "cpu" else ("chunked", "naive")
    for variant in variants:
        out = subprocess.run([sys.executable, __file__, "--chamfer-variant", variant, "--device", device],
                             capture_output=True, text=True, check=True)
        res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        r = res[variant]
        print(f"chamfer {variant:7s} B={B} V={V} N={P}: forward+backward {r['seconds'] * 1000:.0f} ms, "
              f"peak extra memory {r['peak_mib']:.0f} MiB")
    c, n = res["chunked"], res["naive"]
    print(f"chamfer chunked vs naive: {n['seconds'] / c['seconds']:.1f}x faster (goal >= 3x), "
          f"{c['peak_mib'] / n['peak_mib']:.3f} of the memory (goal <= 1/8 = 0.125)")
    if "kdtree" in res:
        k = res["kdtree"]
        print(f"chamfer kdtree vs chunked: {c['seconds'] / k['seconds']:.1f}x faster, kdtree vs naive: "
              f"{n['seconds'] / k['seconds']:.1f}x faster, {k['peak_mib'] / n['peak_mib']:.3f} of the memory")
    for variant in res:
        if variant != "naive":
            print(f"chamfer values agree: |{variant} - naive| = {abs(res[variant]['value'] - n['value']):.2e} "
                  f"(value {res[variant]['value']:.6f})")


def _chamfer_once(variant: str, device: str) -> dict:
    from p2m.geometry.chamfer import chamfer_distance

    g = torch.Generator().manual_seed(0)
    pred = (torch.randn(B, V, 3, generator=g) * 0.2).to(device).requires_grad_()
    gt = (torch.randn(B, P, 3, generator=g) * 0.2).to(device)

    def run():
        if variant in BACKENDS:
            ch = chamfer_distance(pred, gt, backend=BACKENDS[variant])
            loss = (ch.gt_to_pred + ch.pred_to_gt).mean()
        else:
            d = torch.cdist(pred, gt) ** 2  # (B, V, P): the full matrix, kept for backward
            loss = (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean()
        loss.backward()
        pred.grad = None
        return float(loss)

    if device.startswith("cuda"):
        run()  # warm-up (allocator, kernels), then the peak of one call
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        peak = torch.cuda.max_memory_allocated() - base
    else:  # the first call's high-water mark of the resident set, over what the process held before it
        base = _rss_bytes()
        run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    _sync(device)
    start = time.perf_counter()
    value = run()
    _sync(device)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": peak / 2**20, "value": value}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
