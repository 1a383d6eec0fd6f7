"""R(2+1)D video encoder: a 3D stem, four stages of (2+1)D residual blocks.

Two block layouts: ``tran`` (Tran et al., 2018, as in torchvision: the middle width keeps the parameter
count of a full 3x3x3 convolution, batch norm on the shortcut) and ``avid`` (the AVID/CMA authors'
released R(2+1)D-18: full-width factorized convolutions, batch norm after the sum, a plain 1x1x1
shortcut), with the released stem max-pool and global max-pooling as separate options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["R2Plus1D", "VideoEncoderConfig"]


@dataclass
class VideoEncoderConfig:
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # R(2+1)D-18
    blocks: tuple[int, int, int, int] = (2, 2, 2, 2)
    stem_kernel: tuple[int, int, int] = (3, 7, 7)
    stem_stride: tuple[int, int, int] = (1, 2, 2)
    temporal_strides: tuple[int, int, int, int] = (1, 2, 2, 2)  # per stage; spatial stride is 1,2,2,2
    block: Literal["tran", "avid"] = "tran"
    stem_pool: bool = False  # 1x3x3 max-pool of stride (1, 2, 2) after the stem (released AVID model)
    pool: Literal["mean", "max"] = "mean"  # global pooling of the last feature map
    init: Literal["kaiming", "default"] = "kaiming"  # default: PyTorch's own initialization (the released models)


class SpatioTemporalConv(nn.Sequential):
    """A 3x3x3 convolution factorized into 1x3x3 spatial then 3x1x1 temporal (Tran et al., 2018);
    the middle width keeps the parameter count of the full 3D convolution."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        mid = (3 * 3 * 3 * cin * cout) // (3 * 3 * cin + 3 * cout)
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), (1, stride[1], stride[2]), (0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), (stride[0], 1, 1), (1, 0, 0), bias=False),
        )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv1 = SpatioTemporalConv(cin, cout, stride)
        self.bn1 = nn.BatchNorm3d(cout)
        self.conv2 = SpatioTemporalConv(cout, cout, (1, 1, 1))
        self.bn2 = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if cin != cout or stride != (1, 1, 1):
            self.down = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False), nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class AVIDBlock(nn.Module):
    """The released AVID block: (spatial conv, BN, ReLU, temporal conv, BN, ReLU) twice at full width,
    the second without its last BN/ReLU; BN and ReLU after adding a 1x1x1 convolution shortcut."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int]) -> None:
        super().__init__()

        def fact(ci: int, st: tuple[int, int, int]) -> list[nn.Module]:
            return [nn.Conv3d(ci, cout, (1, 3, 3), (1, st[1], st[2]), (0, 1, 1), bias=False), nn.BatchNorm3d(cout),
                    nn.ReLU(inplace=True), nn.Conv3d(cout, cout, (3, 1, 1), (st[0], 1, 1), (1, 0, 0), bias=False)]

        self.main = nn.Sequential(*fact(cin, stride), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                                  *fact(cout, (1, 1, 1)))
        self.out_bn = nn.BatchNorm3d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if cin != cout or stride != (1, 1, 1):
            self.down = nn.Conv3d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        return self.relu(self.out_bn(self.main(x) + idt))


class R2Plus1D(nn.Module):
    """``(B, 3, T, H, W)`` -> (feature map ``(B, C, T', H', W')``, pooled vector ``(B, C)``)."""

    def __init__(self, cfg: VideoEncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or VideoEncoderConfig()
        w0 = cfg.widths[0]
        pad = tuple(k // 2 for k in cfg.stem_kernel)
        stem: list[nn.Module] = [
            nn.Conv3d(3, w0, cfg.stem_kernel, cfg.stem_stride, pad, bias=False),
            nn.BatchNorm3d(w0),
            nn.ReLU(inplace=True),
        ]
        if cfg.stem_pool:
            stem.append(nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
        self.stem = nn.Sequential(*stem)
        block = AVIDBlock if cfg.block == "avid" else BasicBlock
        layers, cin = [], w0
        for i, (w, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            s = 1 if i == 0 else 2
            stride = (cfg.temporal_strides[i], s, s)
            blocks = [block(cin, w, stride)] + [block(w, w, (1, 1, 1)) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*layers)
        self._last_strided = [n for n, m in self.stages[-1][0].named_modules()
                              if isinstance(m, nn.Conv3d) and m.stride[1] > 1]  # for set_last_stride
        self.out_dim = cin
        for m in self.modules() if cfg.init == "kaiming" else ():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_last_stride(self, stride: int) -> R2Plus1D:
        """Set the spatial stride of the last stage (2 as trained; 1 doubles the resolution of the feature
        map with the same weights, as localization work does to get finer maps). Raises ValueError otherwise."""
        if stride not in (1, 2):
            raise ValueError(f"the last stage was trained at stride 2: it runs at 1 or 2, not {stride}")
        first = self.stages[-1][0]
        for name in self._last_strided:
            conv = first.get_submodule(name)
            conv.stride = (conv.stride[0], stride, stride)
        self._last_stride = stride
        return self

    @property
    def last_stride(self) -> int:
        """The last stage's spatial stride now (2 as trained, unless :meth:`set_last_stride` changed it)."""
        return getattr(self, "_last_stride", 2)

    @property
    def spatial_stride(self) -> int:
        """Input pixels per cell of the feature map. Every convolution and the stem's pooling have odd kernels
        padded by half of them, so cell ``i`` is centred on input pixel ``spatial_stride * i``."""
        return self.cfg.stem_stride[1] * (2 if self.cfg.stem_pool else 1) * 2 * 2 * self.last_stride

    def stage_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature map after each of the four stages (for per-stage linear evaluation)."""
        maps, h = [], self.stem(x)
        for stage in self.stages:
            h = stage(h)
            maps.append(h)
        return maps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.stages(self.stem(x))
        return fmap, fmap.amax(dim=(2, 3, 4)) if self.cfg.pool == "max" else fmap.mean(dim=(2, 3, 4))
