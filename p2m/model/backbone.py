"""ResNet-18 image encoder returning the feature maps of its four stages."""
from __future__ import annotations

import os
import warnings

import torch
import torchvision
from torch import Tensor, nn

STAGE_CHANNELS = (64, 128, 256, 512)


NORMS = ("auto", "batch", "frozen", "group")


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters (Detectron's, for fine-tuning with small batches)."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            self.register_buffer(name, torch.full((num_features,), value))

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # present in BatchNorm2d checkpoints
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def resolve_norm(norm: str, has_weights: bool) -> str:
    """"auto": frozen batch norm over pretrained weights, group norm from random init.

    Batch norm from scratch with the small batches of a CPU trial gives running statistics that lag the
    weights for many steps, so early validation (what ASHA compares) measures the lag, not the model.
    """
    if norm not in NORMS:
        raise ValueError(f"backbone norm must be one of {NORMS}, got {norm!r}")
    if norm == "auto":
        return "frozen" if has_weights else "group"
    return norm


class ResNet18Features(nn.Module):
    """torchvision's ResNet-18 up to layer4; ``forward`` returns the maps of the requested stages."""

    def __init__(self, weights_path: str | os.PathLike | None = None, levels: tuple[int, ...] = (1, 2, 3, 4),
                 norm: str = "auto"):
        super().__init__()
        norm = resolve_norm(norm, bool(weights_path))
        if norm == "group" and weights_path:
            raise ValueError("backbone norm 'group' cannot load batch-norm ImageNet weights; use 'frozen' or 'batch'")
        layer = {"batch": nn.BatchNorm2d, "frozen": FrozenBatchNorm2d,
                 "group": lambda c: nn.GroupNorm(min(32, c // 4), c)}[norm]
        net = torchvision.models.resnet18(weights=None, norm_layer=layer)  # never downloads
        if weights_path:
            _load_weights(net, weights_path)
        else:
            warnings.warn("backbone: no pretrained weights given (model.backbone_weights); ResNet-18 starts from "
                          "random init", stacklevel=2)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4][: max(levels)])
        self.levels = tuple(levels)
        self.level_channels = tuple(STAGE_CHANNELS[level - 1] for level in self.levels)

    def forward(self, images: Tensor) -> list[Tensor]:
        """images (N, 3, H, W) -> [(N, C_l, H_l, W_l) for each requested level]."""
        x = self.stem(images)
        maps = []
        for level, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if level in self.levels:
                maps.append(x)
        return maps


def _load_weights(net: nn.Module, path: str | os.PathLike) -> None:
    """torchvision's ResNet-18 state dict (its ``fc`` head ignored) into ``net``.

    Raises:
        ValueError: one line naming the file, when it is missing, unreadable, or not ResNet-18 weights.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: backbone weights not found (model.backbone_weights)") from None
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise ValueError(f"{path}: not a readable weights file ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict (got {type(state).__name__})")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = net.state_dict()
    wrong = [f"{k} {tuple(v.shape)} (ResNet-18: {tuple(own[k].shape)})" for k, v in state.items()
             if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    if wrong:
        raise ValueError(f"{path}: not ResNet-18 weights (wrong shapes: {', '.join(wrong[:2])})")
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"{path}: not ResNet-18 weights (missing {', '.join(missing[:3]) or 'nothing'}; "
                         f"unexpected {', '.join(unexpected[:3]) or 'nothing'})")
