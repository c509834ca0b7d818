"""Synthetic-data throughput: views/s of `p2m data synth` with 1 and N worker processes, in one run,
and the torch DataLoader's samples/s reading the result back.

    python benchmarks/bench_synth.py [--models-per-category 4] [--views 8] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from p2m.data import find_samples
from p2m.data.dataset import P2MDataset, collate_p2m
from p2m.data.synth import SynthConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-per-category", type=int, default=4)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        rates = {}
        for workers in sorted({1, args.workers}):
            cfg = SynthConfig(out=f"{tmp}/w{workers}", models_per_category=args.models_per_category,
                              views=args.views, workers=workers)
            report = generate(cfg, progress=False)
            rates[workers] = report.samples_per_second
            print(f"synth  workers={workers}: {report.samples} views in {report.seconds:.2f} s = "
                  f"{report.samples_per_second:.1f} views/s")
        if len(rates) > 1:
            print(f"synth  speed-up {args.workers} workers vs 1: {rates[args.workers] / rates[1]:.2f}x")
        samples = find_samples(f"{tmp}/w1")
        for num_workers in sorted({0, args.workers}):
            loader = DataLoader(P2MDataset(samples, gt_samples=4000), batch_size=8, num_workers=num_workers,
                                collate_fn=collate_p2m)
            start = time.perf_counter()
            n = sum(batch["images"].shape[0] for batch in loader)
            seconds = time.perf_counter() - start
            print(f"loader num_workers={num_workers}: {n} samples in {seconds:.2f} s = {n / seconds:.1f} samples/s "
                  f"(batch 8, 224 px, 4000 GT points)")


if __name__ == "__main__":
    main()
