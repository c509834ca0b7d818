"""Training: :func:`fit` runs the batched loop, validates every epoch, checkpoints, and calls a hook.

The hook ``on_epoch(metrics, checkpoint_dir, views)`` is how a search reports to its scheduler without
``p2m`` importing it (``views``: the validation's per-view rows, see :class:`p2m.evaluate.Evaluation`). Metric keys (one flat dict per epoch; the names are :mod:`p2m.names`'):
    epoch (1-based), train_loss, ``train_column(stage, term)`` for every loss term (unweighted epoch means),
    ``val_column(stage, metric)`` for every metric, lr, epoch_seconds, train_samples_per_second, val_views, and
    with ``loss.weighting: learned`` the chamfer weight each stage ends the epoch with, ``learned_column(stage)``.
The objective of a search is ``OBJECTIVE`` (``val_s3_cd``, lower is better).

An ``out_dir`` holds ``RUN_CONFIG_FILE``, ``METRICS_FILE`` (one line per epoch), ``CHECKPOINT_DIR/CHECKPOINT_FILE``
(the latest epoch, replaced atomically) and ``BEST_FILE`` (the epoch with the lowest ``OBJECTIVE``).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, RandomSampler

from p2m.atomic import atomic_write_bytes
from p2m.checkpoint import checkpoint_config, final_weights, is_final, load_checkpoint, save_checkpoint
from p2m.config import TrainConfig, save_config
from p2m.data.dataset import P2MDataset, collate_p2m
from p2m.data.layout import find_samples
from p2m.ema import ModelEMA, decay_for
from p2m.evaluate import evaluate
from p2m.loss import p2m_loss
from p2m.model import Pixel2Mesh
from p2m.names import (BEST_FILE, CHECKPOINT_DIR, CHECKPOINT_FILE, CURVES_FILE, EPOCH, EPOCH_SECONDS, LOSS_TERMS, LR,
                       METRICS, METRICS_FILE, OBJECTIVE, RUN_CONFIG_FILE, SAMPLES_PER_SECOND, STAGES, TRAIN_LOSS,
                       VAL_VIEWS, learned_column, stage_key, train_column, val_column)
from p2m.weighting import LearnedWeights

OnEpoch = Callable[[dict, Path, list[dict]], None]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch, step and terms."""


class FitResult(NamedTuple):
    history: list[dict]  # one metrics dict per epoch, including epochs before a resume
    best: dict  # the metrics of the epoch with the lowest val_s3_cd
    out_dir: Path


def resolve_device(name: str) -> torch.device:
    """"auto" -> CUDA when available, else CPU; anything else is checked and returned."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def build_model(cfg: TrainConfig) -> Pixel2Mesh:
    return Pixel2Mesh(cfg.model, cfg.data.image_size)


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, device: torch.device,
                    loss_weights: LearnedWeights | None = None) -> torch.optim.Adam:
    """Adam; on a CPU its fused kernel, one pass over each parameter instead of one per operation (about
    5x faster for the ResNet-18's 11M weights, the same update to rounding). Learned loss weights, when given,
    are a second group at ``loss.weighting_lr`` without weight decay."""
    groups = [{"params": list(model.parameters())}]
    if loss_weights is not None:
        groups.append({"params": list(loss_weights.parameters()), "lr": cfg.loss.weighting_lr, "weight_decay": 0.0})
    return torch.optim.Adam(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, fused=device.type == "cpu")


def fit(cfg: TrainConfig, out_dir: str | os.PathLike, on_epoch: OnEpoch | None = None,
        resume_from: str | os.PathLike | None = None, progress: bool = True, save_best: bool = True,
        log: Callable[[str], None] | None = print, changing: tuple[str, ...] = (),
        final: bool = False) -> FitResult:
    """Train ``cfg`` for ``cfg.optim.max_epochs`` epochs (continuing from ``resume_from`` when given).

    Args:
        out_dir: where the config, metrics, checkpoint and best weights go (created).
        on_epoch: called after each epoch's checkpoint is written, with the metrics, the checkpoint's
            directory and the validation's per-view rows.
        resume_from: a checkpoint file or directory; training continues after its epoch, with its
            optimizer and RNG states, and gives the same result as an uninterrupted run (on CPU).
        progress: show a tqdm bar over each epoch's steps.
        save_best: keep ``best.pt`` beside the checkpoint.
        log: receives one summary line per epoch (None: silent).
        changing: config keys (``"loss.w2_edge"``) that may differ from the checkpoint's when resuming: a
            population scheduler continues another trial's checkpoint under new loss weights, keeping its
            model, optimizer state and epoch.
        final: the last epoch's checkpoint is a final one (:func:`p2m.checkpoint.final_weights`: the evaluated
            weights, no optimizer state), for a run nobody will continue past ``max_epochs`` (a search's trial).
            Resuming from a final checkpoint trains nothing: its epoch must be ``max_epochs``.

    Raises:
        NonFiniteLossError: when the loss becomes NaN or infinite.
        ValueError: for a missing dataset or split, or a checkpoint that is not readable, or a final one from
            before ``max_epochs``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / CHECKPOINT_DIR
    device = resolve_device(cfg.device)
    state = load_checkpoint(resume_from, map_location=device) if resume_from is not None else None
    if state is not None and is_final(state):  # a finished run (its driver stopped it before it heard the end)
        if int(state[EPOCH]) < cfg.optim.max_epochs:
            raise ValueError(f"{resume_from}: a finished run's final weights (epoch {state[EPOCH]}, no optimizer "
                             f"state) cannot be continued to epoch {cfg.optim.max_epochs}")
        return FitResult(list(state["history"]), dict(state["best"]), out_dir)
    torch.manual_seed(cfg.seed)
    amp_dtype = _amp_dtype(cfg, device)

    train_set, val_set = _datasets(cfg)
    with warnings.catch_warnings():
        if cfg.model.backbone_weights == "":
            warnings.simplefilter("ignore")  # said once below, not once per trial restart
        model = build_model(cfg).to(device)
    loss_weights = LearnedWeights(cfg.loss).to(device) if cfg.loss.weighting == "learned" else None
    log_vars = loss_weights.log_vars if loss_weights is not None else None
    optimizer = build_optimizer(cfg, model, device, loss_weights)
    drop_last = len(train_set) > cfg.optim.batch_size  # no ragged last batch, unless it is the only one
    steps = cfg.optim.steps_per_epoch or (len(train_set) // cfg.optim.batch_size if drop_last else 1)
    # The schedule's horizon is fixed when a run starts: a resume that lengthens the run (max_epochs)
    # continues the schedule where it stood (past its end, at its floor) instead of stretching it, which
    # would throw the learning rate back up mid-run.
    horizon = steps * cfg.optim.max_epochs
    if state is not None:
        saved = checkpoint_config(state, str(resume_from))
        horizon = int(state.get("lr_horizon_steps", steps * saved.optim.max_epochs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, horizon))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    levels = [model.level(i) for i in range(3)]
    ema = ModelEMA(model, decay_for(cfg.optim.ema_epochs, steps)) if cfg.optim.ema_epochs > 0 else None
    evaluated = ema.module if ema else model  # what validation measures and best.pt keeps

    history: list[dict] = []
    best: dict = {}
    start_epoch = 1
    if state is not None:
        _check_same_run(cfg, saved, resume_from, changing)
        model.load_state_dict(state["model"])
        if loss_weights is not None:
            loss_weights.load_state_dict(state["loss_weights"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if cfg.optim.lr != saved.optim.lr:  # a population scheduler changed it: the schedule goes on from it
            scheduler.base_lrs[0] = cfg.optim.lr
            optimizer.param_groups[0]["lr"] = cfg.optim.lr * scheduler.lr_lambdas[0](scheduler.last_epoch)
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        history, best = list(state["history"]), dict(state["best"])
        start_epoch = int(state[EPOCH]) + 1
    elif cfg.model.backbone_weights == "" and log:
        log("note: the ResNet-18 starts from random init (set model.backbone_weights to a local ImageNet file)")
    save_config(cfg, out_dir / RUN_CONFIG_FILE)
    _write_history(out_dir / METRICS_FILE, history)

    val_loader = DataLoader(val_set, batch_size=cfg.optim.batch_size, shuffle=False, collate_fn=collate_p2m,
                            num_workers=cfg.data.num_workers)
    for epoch in range(start_epoch, cfg.optim.max_epochs + 1):
        t0 = time.perf_counter()
        train_set.set_epoch(epoch)
        sampler = RandomSampler(train_set, num_samples=steps * cfg.optim.batch_size if cfg.optim.steps_per_epoch else None,
                                generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        loader = DataLoader(train_set, batch_size=cfg.optim.batch_size, sampler=sampler, collate_fn=collate_p2m,
                            num_workers=cfg.data.num_workers, drop_last=drop_last,
                            pin_memory=device.type == "cuda")
        term_names = None
        term_sums = torch.zeros(0)  # set at the first step, on the device
        loss_sum, seen = 0.0, 0
        bar = _progress(loader, epoch, cfg.optim.max_epochs, progress)
        for step, batch in enumerate(bar, start=1):
            images = batch["images"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                out = model(images)
            res = p2m_loss(cfg.loss, out, levels, batch["points"].to(device), batch["normals"].to(device),
                           log_vars=log_vars)
            if not torch.isfinite(res.total):
                terms = ", ".join(f"{k}={float(v.detach()):.3g}" for k, v in res.terms.items())
                raise NonFiniteLossError(f"loss became {float(res.total.detach())} at epoch {epoch} step {step} ({terms})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(res.total).backward()
            if cfg.optim.grad_clip_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            n = images.shape[0]
            seen += n
            loss_sum += float(res.total.detach()) * n  # already synchronised by the finiteness check
            if term_names is None:
                term_names, term_sums = list(res.terms), torch.zeros(len(res.terms), device=device)
            term_sums += torch.stack([v.detach() for v in res.terms.values()]) * n  # stays on the device
            if progress:
                bar.set_postfix(loss=f"{loss_sum / seen:.4g}")
        train_seconds = time.perf_counter() - t0
        ev = evaluate(evaluated, val_loader, device, amp_dtype)
        terms = dict(zip(term_names, (term_sums / seen).tolist()))
        metrics = {EPOCH: epoch, TRAIN_LOSS: loss_sum / seen,
                   **{train_column(s, t): terms[stage_key(s, t)] for s in STAGES for t in LOSS_TERMS},
                   **{val_column(s, m): ev.means[stage_key(s, m)] for s in STAGES for m in METRICS},
                   VAL_VIEWS: len(ev.items),
                   **({learned_column(s): float(w) for s, w in zip(STAGES, loss_weights.weights().detach())}
                      if loss_weights is not None else {}),
                   LR: optimizer.param_groups[0]["lr"], EPOCH_SECONDS: time.perf_counter() - t0,
                   SAMPLES_PER_SECOND: seen / train_seconds}
        history.append(metrics)
        if not best or metrics[OBJECTIVE] < best[OBJECTIVE]:
            best = metrics
            if save_best:
                save_checkpoint(out_dir / BEST_FILE, {EPOCH: epoch, "config": cfg.to_dict(),
                                                      "model": evaluated.state_dict()})
        state = {
            EPOCH: epoch, "config": cfg.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            **({"loss_weights": loss_weights.state_dict()} if loss_weights is not None else {}),
            "scheduler": scheduler.state_dict(), "lr_horizon_steps": horizon, "scaler": scaler.state_dict(),
            **({"ema": ema.state_dict()} if ema is not None else {}), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            "history": history, "best": best}
        save_checkpoint(ckpt_dir / CHECKPOINT_FILE,
                        final_weights(state) if final and epoch == cfg.optim.max_epochs else state)
        _write_history(out_dir / METRICS_FILE, history)
        if log:
            log(_summary(metrics, cfg.optim.max_epochs))
        if on_epoch is not None:
            on_epoch(metrics, ckpt_dir, ev.items)
    return FitResult(history, best, out_dir)


def run_training(cfg: TrainConfig, out_dir: str | os.PathLike, resume: bool = False, previews: int = 4,
                 progress: bool = True) -> FitResult:
    """``p2m train``: :func:`fit`, then OBJ meshes and preview PNGs of ``previews`` validation views
    (from the best epoch's weights) and ``curves.png``.

    Raises:
        ValueError: when ``out_dir`` already holds a run and ``resume`` is False, or holds none and it is True.
    """
    from p2m.checkpoint import load_model
    from p2m.predict import plot_curves, write_previews

    out_dir = Path(out_dir)
    has_run = (out_dir / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file()
    if has_run and not resume:
        raise ValueError(f"{out_dir}: already holds a training run (pass --resume to continue it, or another --out)")
    if resume and not has_run:
        raise ValueError(f"{out_dir}: no checkpoint to resume from ({CHECKPOINT_DIR}/{CHECKPOINT_FILE} is missing)")
    result = fit(cfg, out_dir, resume_from=out_dir / CHECKPOINT_DIR if resume else None, progress=progress)
    plot_curves(result.history, out_dir / CURVES_FILE, title=f"{cfg.profile} profile, {cfg.data.root}")
    if previews > 0:
        model, _ = load_model(out_dir / BEST_FILE, resolve_device(cfg.device))
        _, val = _datasets(cfg)
        step = max(1, len(val) // previews)
        write_previews(model, cfg, val.samples[::step][:previews], out_dir)
    return result


def lr_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier at each optimizer step: linear warm-up, then constant, cosine to 5%, or
    warmup-stable-decay (constant, then linear to 5% over the last ``lr_decay_fraction`` of the steps)."""
    warmup, schedule, decay = cfg.optim.warmup_steps, cfg.optim.lr_schedule, cfg.optim.lr_decay_fraction

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if schedule == "cosine":
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - 0.95 * max(0.0, progress - (1 - decay)) / decay  # wsd

    return factor


def _datasets(cfg: TrainConfig) -> tuple[P2MDataset, P2MDataset]:
    if not cfg.data.root:
        raise ValueError("data.root: no dataset given (set data.root or pass --data)")
    train = find_samples(cfg.data.root, cfg.data.train_split)
    val = find_samples(cfg.data.root, cfg.data.val_split)
    for name, samples in (("data.train_split", train), ("data.val_split", val)):
        if not samples:
            raise ValueError(f"{name}: no samples in split {getattr(cfg.data, name.split('.')[1])!r} of {cfg.data.root}")
    if cfg.data.val_limit and len(val) > cfg.data.val_limit:
        step = len(val) / cfg.data.val_limit  # spread over categories and models, not the first ones
        val = [val[int(i * step)] for i in range(cfg.data.val_limit)]
    return (P2MDataset(train, cfg.data.gt_samples, cfg.data.image_size, seed=cfg.seed),
            P2MDataset(val, cfg.data.gt_samples, cfg.data.image_size, seed=cfg.seed))


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.optim.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _check_same_run(cfg: TrainConfig, saved: TrainConfig, source, changing: tuple[str, ...] = ()) -> None:
    """A resume may lengthen a run (optim.max_epochs) or move it (device, data.root, workers), and change the
    ``changing`` keys; nothing else."""
    def strip(c: TrainConfig) -> dict:
        flat = c.flat()
        for key in ("optim.max_epochs", "device", "data.root", "data.num_workers", *changing):
            flat.pop(key, None)
        return flat

    a, b = strip(cfg), strip(saved)
    diff = sorted(k for k in a if a[k] != b.get(k))
    if diff:
        raise ValueError(f"{source}: checkpoint was trained with a different config ({', '.join(diff[:5])})")


def _progress(loader, epoch: int, epochs: int, enabled: bool):
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=f"epoch {epoch}/{epochs}", leave=False, dynamic_ncols=True)


def _summary(m: dict, epochs: int) -> str:
    cds = " / ".join(f"{m[val_column(s, 'cd_x1000')]:.3f}" for s in STAGES)
    return (f"epoch {m[EPOCH]}/{epochs}  loss {m[TRAIN_LOSS]:.4g}  val CDx1000 s1/s2/s3 {cds}  "
            f"F@tau {m[val_column(3, 'f_tau')]:.1f}  ({m[EPOCH_SECONDS]:.1f} s, {m[SAMPLES_PER_SECOND]:.1f} samples/s)")


def _write_history(path: Path, history: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(row) + "\n" for row in history).encode())

