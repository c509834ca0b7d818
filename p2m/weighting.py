"""Learned loss weighting: homoscedastic task uncertainty (Kendall, Gal and Cipolla, "Multi-Task Learning Using
Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018, Eq. 5 and 7).

``loss.weighting: learned`` learns one weight per stage for the chamfer term. Each stage's chamfer ``L_s`` is
a regression loss with a learned noise ``sigma_s``; with the log-variance ``s_s = log sigma_s^2`` (the paper's
Sec. 3.2, for numerical stability), its part of the total loss is

    L_s / (2 sigma_s^2) + log sigma_s  =  0.5 exp(-s_s) L_s + 0.5 s_s,

so the weight is ``0.5 exp(-s_s)`` and the ``0.5 s_s`` keeps it from growing without bound (at the optimum
``exp(s_s) = L_s``: the weight follows ``1 / (2 L_s)``). The regularisers (edge, Laplacian, normal, move) keep
their configured weights. The log-variances start where the weight equals ``w{s}_chamfer``
(``s_s = -log(2 w)``), so a run starts from the loss it would have had with static weights.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from p2m.config import LossConfig
from p2m.names import STAGES


class LearnedWeights(nn.Module):
    """The three stages' chamfer log-variances, trained with the model (their own Adam group)."""

    def __init__(self, cfg: LossConfig):
        super().__init__()
        self.log_vars = nn.Parameter(torch.tensor([-math.log(2 * cfg.weight(s, "chamfer")) for s in STAGES]))

    def weights(self) -> Tensor:
        """FloatTensor (3,): the chamfer weight each stage trains with now, ``0.5 exp(-s)``."""
        return 0.5 * torch.exp(-self.log_vars)


def uncertainty_weighted(losses: Tensor, log_vars: Tensor) -> Tensor:
    """``sum_s 0.5 exp(-s_s) losses[s] + 0.5 s_s``: losses and log_vars FloatTensor (3,); returns a scalar."""
    return (0.5 * torch.exp(-log_vars) * losses + 0.5 * log_vars).sum()
