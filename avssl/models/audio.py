"""2D convolutional audio encoder on spectrograms (AVID's: 7x7 stride-2 stem, conv blocks to 512).

The released AVID ``Conv2D`` of depth 10 is ``stem_channels=64, convs_per_stage=2, strides=(2, 2, 2, 1),
input_bn=False``; the defaults here (a batch norm on the input, strides (1, 2, 2, 2)) are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["AudioEncoderConfig", "Conv2DAudio"]


@dataclass
class AudioEncoderConfig:
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    convs_per_stage: int = 2
    stem_channels: int = 32
    strides: tuple[int, int, int, int] = (1, 2, 2, 2)  # of each stage's first convolution
    input_bn: bool = True  # batch norm on the input spectrogram (ours; the released model has none)
    init: Literal["kaiming", "default"] = "kaiming"  # default: PyTorch's own initialization (the released models)


def _conv_bn(cin: int, cout: int, k: int, s: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Conv2DAudio(nn.Module):
    """``(B, 1, F, T)`` log-mel -> (feature map ``(B, C, F', T')``, pooled vector ``(B, C)``)."""

    def __init__(self, cfg: AudioEncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or AudioEncoderConfig()
        layers = _conv_bn(1, cfg.stem_channels, 7, 2)
        cin = cfg.stem_channels
        for i, w in enumerate(cfg.widths):
            layers += _conv_bn(cin, w, 3, cfg.strides[i])
            for _ in range(cfg.convs_per_stage - 1):
                layers += _conv_bn(w, w, 3, 1)
            cin = w
        self.net = nn.Sequential(*([nn.BatchNorm2d(1)] if cfg.input_bn else []), *layers)
        self.out_dim = cin
        for m in self.modules() if cfg.init == "kaiming" else ():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.net(x)
        return fmap, fmap.amax(dim=(2, 3))
