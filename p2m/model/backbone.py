"""ResNet-18 image encoder returning the feature maps of its four stages."""
from __future__ import annotations

import os
import warnings

import torch
import torchvision
from torch import Tensor, nn

STAGE_CHANNELS = (64, 128, 256, 512)


class ResNet18Features(nn.Module):
    """torchvision's ResNet-18 up to layer4; ``forward`` returns the maps of the requested stages."""

    def __init__(self, weights_path: str | os.PathLike | None = None, levels: tuple[int, ...] = (1, 2, 3, 4)):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)  # never downloads
        if weights_path:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = net.load_state_dict(state, strict=False)
            if [k for k in missing if not k.startswith("fc.")] or unexpected:
                raise ValueError(f"{weights_path}: not ResNet-18 weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
        else:
            warnings.warn("backbone: no pretrained weights given (model.backbone_weights); ResNet-18 starts from "
                          "random init", stacklevel=2)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4][: max(levels)])
        self.levels = tuple(levels)
        self.out_channels = sum(STAGE_CHANNELS[level - 1] for level in self.levels)

    def forward(self, images: Tensor) -> list[Tensor]:
        """images (N, 3, H, W) -> [(N, C_l, H_l, W_l) for each requested level]."""
        x = self.stem(images)
        maps = []
        for level, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if level in self.levels:
                maps.append(x)
        return maps
