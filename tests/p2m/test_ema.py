"""The EMA of the weights and the learning-rate schedules, against hand-computed values."""
import math

import pytest
import torch

from p2m.config import apply_overrides, profile_config
from p2m.ema import ModelEMA, decay_for
from p2m.train import lr_factor


def test_the_average_is_the_bias_corrected_exponential_mean_of_the_steps():
    model = torch.nn.Linear(1, 1, bias=False)
    ema = ModelEMA(model, decay=0.9)
    seen = []
    for value in (4.0, -2.0, 7.0, 1.0, 3.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        seen.append(value)
        n = len(seen)
        expected = sum(0.9 ** (n - 1 - i) * w for i, w in enumerate(seen)) / sum(0.9 ** k for k in range(n))
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert not ema.module.weight.requires_grad and not ema.module.training


def test_decay_for_a_time_constant_in_epochs():
    d = decay_for(1.0, 36)
    assert d ** 36 == pytest.approx(math.exp(-1))  # one epoch back, a step's weight has fallen by e
    with pytest.raises(ValueError, match="time constant"):
        decay_for(0, 36)


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    # cosine to 5% over the 10 steps after warm-up
    ("cosine", [0.5, 1.0] + [0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)) for p in (0.2, 0.9, 1.0, 1.0)]),
    # warmup-stable-decay: constant until the last 20% of the 10 steps after warm-up, then linear to 5%
    ("wsd", [0.5, 1.0, 1.0, 1.0 - 0.95 * 0.1 / 0.2, 0.05, 0.05]),
])
def test_learning_rate_schedules_by_hand(schedule, expected):
    cfg = apply_overrides(profile_config("tiny"), ["optim.warmup_steps=2", f"optim.lr_schedule={schedule}",
                                                   "optim.lr_decay_fraction=0.2"])
    factor = lr_factor(cfg, total_steps=12)
    assert [factor(step) for step in (0, 2, 4, 11, 12, 20)] == pytest.approx(expected)
