"""An exponential moving average of a model's weights, evaluated in place of the weights being trained.

Averaging the weights over the last epoch or so (Polyak averaging; the "mean teacher" of Tarvainen and
Valpola 2017; the EMA of YOLO-style trainers) gives, at a constant learning rate, roughly the model a
learning-rate decay would reach, without the step-to-step jitter of the raw weights. So a validation
measured on it ranks configurations early in a run much as it will later, which is what ASHA's rungs
compare.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """``module``: a frozen copy of the model holding the bias-corrected exponential average of its weights.

    After n updates with decay d per step the average is ``sum_i d**(n-i) w_i / sum_i d**(n-i)`` (the
    correction Adam uses for its moments): at first the plain mean of the steps so far, then, after about
    ``1 / (1 - d)`` steps, an average over that many recent steps. Floating-point buffers (batch-norm
    statistics) are copied, not averaged; sparse ones (the template's connectivity) are shared.

    Args:
        decay: per optimizer step, in (0, 1); :func:`decay_for` turns a time constant in epochs into one.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"ema decay must lie in (0, 1), got {decay}")
        # sparse buffers (the template's adjacency) are constant and cannot be deep-copied: share them
        shared = {id(b): b for b in model.buffers() if b.layout != torch.strided}
        self.module = copy.deepcopy(model, memo=shared).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        # the new step's share of the corrected average: (1 - d) / (1 - d**n), which is 1 at n = 1
        share = (1 - self.decay) / (1 - self.decay ** self.updates)
        for averaged, current in zip(self.module.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), share)
        for averaged, current in zip(self.module.buffers(), model.buffers()):
            if averaged.is_floating_point() and averaged.layout == torch.strided:
                averaged.copy_(current)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])


def decay_for(epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose average has a time constant of ``epochs`` epochs (weights e-fold over it)."""
    if epochs <= 0 or steps_per_epoch < 1:
        raise ValueError(f"ema time constant must be > 0 epochs with >= 1 step each, got {epochs}, {steps_per_epoch}")
    return math.exp(-1.0 / (epochs * steps_per_epoch))
