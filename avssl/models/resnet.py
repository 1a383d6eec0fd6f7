"""torchvision's ResNet-18 as the field's localizers use it (EZ-VSL, SLAVC): an image encoder on single frames, up to
``layer4`` (a 7x7 map of 512 channels at 224x224), and an audio encoder on one-channel spectrograms with global
max-pooling; and the ImageNet weights, fetched once into torch's hub cache when a config or ``--ogl`` asks.

Both keep torchvision's module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``), so a torchvision or a
peer's state dict maps onto them by prefix alone (:mod:`avssl.models.peers`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from ..config import InputError

__all__ = ["IMAGENET_FILE", "IMAGENET_URL", "ResNetAudio", "ResNetFrames", "ResNetTrunk", "imagenet_resnet18",
           "imagenet_weights_path"]

# torchvision's ResNet18_Weights.IMAGENET1K_V1 (the weights EZ-VSL and SLAVC start from, and OGL's object model)
IMAGENET_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
IMAGENET_FILE = "resnet18-f37072fd.pth"


class ResNetTrunk(nn.Module):
    """ResNet-18 without its pooling and classifier: ``(B, C, H, W)`` -> ``layer4``'s map ``(B, 512, H/32, W/32)``;
    ``in_channels`` 3 (images) or 1 (spectrograms)."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def set_last_stride(self, stride: int) -> None:
        """``layer4``'s stride: 2 as trained, or 1 (a map twice as fine from the same weights)."""
        block = self.layer4[0]
        block.conv1.stride = (stride, stride)
        block.downsample[0].stride = (stride, stride)

    @property
    def last_stride(self) -> int:
        return self.layer4[0].conv1.stride[0]


@dataclass
class ResNetConfig:
    # "imagenet": a training run that starts afresh loads torchvision's ImageNet weights (fetched once); None: random
    pretrained: Literal["imagenet"] | None = None
    trained_stride: int = 2  # layer4's stride as trained (set_last_stride runs it at 1 or at this)


class ResNetFrames(nn.Module):
    """The image encoder on the centre frame of a clip: ``(B, 3, T, H, W)`` -> (map ``(B, 512, 1, H', W')``, pooled
    ``(B, 512)``, the map's mean). The interface of :class:`~avssl.models.video.R2Plus1D`, with
    :meth:`set_last_stride` and :attr:`spatial_stride` for the localizer."""

    out_dim = 512

    def __init__(self, cfg: ResNetConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ResNetConfig()
        self.net = ResNetTrunk(3)  # ImageNet weights, where the config asks, are loaded by a run that starts afresh

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frame = video[:, :, video.shape[2] // 2]  # the clip's centre frame (its only one for one-frame clips)
        fmap = self.net(frame)
        return rearrange(fmap, "b c h w -> b c 1 h w"), fmap.mean(dim=(2, 3))

    def set_last_stride(self, stride: int) -> ResNetFrames:
        trained = self.cfg.trained_stride
        if stride not in (1, trained):
            raise ValueError(f"the last stage was trained at stride {trained}: it runs at 1 or {trained}, not {stride}")
        self.net.set_last_stride(stride)
        return self

    @property
    def last_stride(self) -> int:
        return self.net.last_stride

    @property
    def spatial_stride(self) -> int:
        """Input pixels per cell of the map (32, or 16 with the last stride at 1)."""
        return 16 * self.net.last_stride


class ResNetAudio(nn.Module):
    """The audio encoder on ``(B, 1, F, T)`` spectrograms -> (map ``(B, 512, F', T')``, pooled ``(B, 512)``: the
    map's global maximum, as EZ-VSL's ``AdaptiveMaxPool2d``)."""

    out_dim = 512

    def __init__(self) -> None:
        super().__init__()
        self.net = ResNetTrunk(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fmap = self.net(x)
        return fmap, fmap.amax(dim=(2, 3))


def imagenet_weights_path() -> Path:
    """Where torchvision keeps the ImageNet ResNet-18 file: ``torch.hub.get_dir()/checkpoints/resnet18-f37072fd.pth``
    (``$TORCH_HOME/hub/checkpoints``)."""
    from torch.hub import get_dir

    return Path(get_dir()) / "checkpoints" / IMAGENET_FILE


def imagenet_resnet18() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 weights without the classifier (``fc``), downloaded once into torch's hub
    cache (its hash checked then), read from there afterwards; offline, an InputError saying what to fetch and
    where to put it."""
    path = imagenet_weights_path()
    if not path.is_file():
        from torch.hub import download_url_to_file

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            download_url_to_file(IMAGENET_URL, os.fspath(path), hash_prefix="f37072fd", progress=True)
        except Exception as e:  # noqa: BLE001 - no network, a proxy, a cut connection: one line either way
            why = str(getattr(e, "reason", e)).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"torchvision's ImageNet ResNet-18 weights are needed (a pretrained image encoder, or "
                             f"--ogl) and could not be fetched from {IMAGENET_URL} ({why}): download that file on a "
                             f"machine with network and put it at {path}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: not torchvision's ImageNet ResNet-18 file ({type(e).__name__}): remove it and "
                         "run the command again to fetch it") from None
    if not isinstance(state, dict) or "layer4.1.bn2.running_var" not in state:
        raise InputError(f"{path}: not torchvision's ImageNet ResNet-18 file: remove it and run the command again")
    return {k: v for k, v in state.items() if not k.startswith("fc.")}
