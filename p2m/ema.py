"""An exponential moving average of a model's weights, evaluated in place of the weights being trained.

Averaging the weights over the last few hundred steps (Polyak averaging; Tarvainen and Valpola 2017,
"mean teacher"; the EMA of YOLO and Mesh R-CNN-style trainers) gives, at a constant learning rate, roughly
the model a learning-rate decay would reach, and without the step-to-step jitter of the raw weights. So a
validation measured on it ranks configurations early in a run much as it will at the end, which is what
ASHA's rungs compare.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """``module``: a frozen copy of the model whose parameters follow ``p_ema <- d p_ema + (1 - d) p``.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first ``n`` updates, so the average
    does not keep the random initialisation for hundreds of steps. Floating-point buffers (batch-norm
    statistics) are copied, not averaged; sparse ones (the template's connectivity) are shared.
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
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for averaged, current in zip(self.module.parameters(), model.parameters()):
            averaged.lerp_(current.detach(), 1.0 - d)
        for averaged, current in zip(self.module.buffers(), model.buffers()):
            if averaged.is_floating_point() and averaged.layout == torch.strided:
                averaged.copy_(current)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
