"""Object-guided localization (OGL, EZ-VSL's): where an ImageNet classifier sees objects, whatever is heard.

Their test scripts (stoneMo/EZ-VSL and stoneMo/SLAVC ``test.py``) take torchvision's ImageNet ResNet-18 up to
``layer4`` and reduce its map to one channel, the mean of ``|x|`` over channels; the localizer mixes it with the
audio-visual map (:meth:`~avssl.localize.heatmap.Localizer.finish`). The weights are torchvision's, fetched once
into torch's hub cache when OGL is asked for (:func:`~avssl.models.resnet.imagenet_resnet18`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.resnet import ResNetTrunk, imagenet_resnet18

__all__ = ["ObjectMaps"]


class ObjectMaps(nn.Module):
    """ImageNet-normalized frames ``(B, 3, H, W)`` -> object maps ``(B, H/32, W/32)`` (in eval mode, no gradient)."""

    stride = 32

    def __init__(self) -> None:
        super().__init__()
        self.net = ResNetTrunk(3)
        self.net.load_state_dict(imagenet_resnet18())
        self.eval()

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames).abs().mean(1)
