"""A 2D video encoder for localization: a plain convolutional network on single frames.

Methods that localize sounds well (EZ-VSL, SLAVC, FNAC) look at one frame with a 2D image encoder and keep
a map fine enough that an object covers several of its cells. :class:`FrameEncoder` does that from
scratch: a stride-2 stem and four stages of (conv, BN, ReLU) x ``convs_per_stage``, on ``frames`` frames of
the clip (the centre one by default) whose feature maps are averaged over time. It has the interface of
:class:`~avssl.models.video.R2Plus1D`: ``(B, 3, T, H, W)`` -> (map ``(B, C, 1, H', W')``, pooled ``(B, C)``), and
:meth:`set_last_stride`, so :class:`~avssl.models.avmodel.AVModel`, the losses and the localizer take either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

__all__ = ["FrameEncoder", "FrameEncoderConfig"]


@dataclass
class FrameEncoderConfig:
    widths: tuple[int, int, int, int] = (32, 64, 96, 128)
    strides: tuple[int, int, int, int] = (1, 2, 2, 1)  # of each stage's first conv; the stem adds 2 (total 8)
    convs_per_stage: int = 2
    stem_channels: int = 24
    frames: int = 1  # frames of the clip encoded (evenly spaced, the centre one when 1); features averaged
    pool: Literal["mean", "max"] = "mean"


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FrameEncoder(nn.Module):
    def __init__(self, cfg: FrameEncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FrameEncoderConfig()
        self.stem = nn.Sequential(*_conv(3, cfg.stem_channels, 2))
        stages, cin = [], cfg.stem_channels
        for w, s in zip(cfg.widths, cfg.strides):
            layers = _conv(cin, w, s)
            for _ in range(cfg.convs_per_stage - 1):
                layers += _conv(w, w, 1)
            stages.append(nn.Sequential(*layers))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.out_dim = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def set_last_stride(self, stride: int) -> FrameEncoder:
        """The last stage's stride: as trained, or 1 (a twice finer map from the same weights) when it was trained
        with 2. Raises ValueError for a stride the stage was not trained at or cannot reach."""
        trained = self.cfg.strides[-1]
        if stride not in (1, trained):
            raise ValueError(f"the last stage was trained at stride {trained}: it runs at 1 or {trained}, not {stride}")
        self.stages[-1][0].stride = (stride, stride)
        return self

    @property
    def last_stride(self) -> int:
        """The last stage's stride now (as trained, unless :meth:`set_last_stride` changed it)."""
        return self.stages[-1][0].stride[0]

    @property
    def spatial_stride(self) -> int:
        """Input pixels per cell of the feature map. Every convolution has an odd kernel padded by half of it, so
        cell ``i`` is centred on input pixel ``spatial_stride * i``."""
        stride = self.stem[0].stride[0]
        for stage in self.stages:
            stride *= stage[0].stride[0]
        return stride

    def _pick(self, video: torch.Tensor) -> torch.Tensor:
        t = video.shape[2]
        n = min(self.cfg.frames, t)
        idx = [t // 2] if n == 1 else torch.linspace(0, t - 1, n).round().long().tolist()
        return video[:, :, idx]

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._pick(video)
        b, t = x.shape[0], x.shape[2]
        fmap = self.stages(self.stem(rearrange(x, "b c t h w -> (b t) c h w")))
        fmap = rearrange(fmap, "(b t) c h w -> b c t h w", b=b, t=t).mean(dim=2, keepdim=True)
        pooled = fmap.amax(dim=(2, 3, 4)) if self.cfg.pool == "max" else fmap.mean(dim=(2, 3, 4))
        return fmap, pooled
