"""The AVID-CMA authors' released checkpoint layout -> avssl's :class:`AVModel` (names and transposes only).

Their ``AV_Wrapper`` (wrapped in DataParallel, so every name starts with ``module.``) holds ``video_model``
(R(2+1)D-18: ``conv1`` stem, stages ``conv2x``..``conv5x`` of ``BasicR2P1DBlock``), ``audio_model`` (``Conv2D``
depth 10: ``conv1`` stem, ``block1``..``block4`` of two conv/BN pairs), and the heads ``video_proj.projection``
and ``audio_proj.projection``. Their spectrograms are time x frequency, ours frequency x time: the audio
convolutions' kernels are transposed (kernels, strides and padding are square, so nothing else changes).
"""

from __future__ import annotations

import torch

from .layout import LayoutError, map_state, rename

__all__ = ["ReleasedLayoutError", "from_released", "to_released"]

_BLOCK = {"spt_conv1": "main.0", "spt_bn1": "main.1", "tmp_conv1": "main.3", "tmp_bn1": "main.4",
          "spt_conv2": "main.6", "spt_bn2": "main.7", "tmp_conv2": "main.9", "out_bn": "out_bn", "res_conv": "down"}
_AUDIO = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4}  # offsets in a block's six layers (conv, BN, ReLU) x 2
_RULES = [  # (released name, avssl name), as regular expressions; the first match wins
    (r"video_model\.conv1\.(\d)\.(.+)", lambda m: f"video.stem.{m[1]}.{m[2]}"),
    (r"video_model\.conv([2-5])x\.(\d+)\.(\w+)\.(.+)",
     lambda m: f"video.stages.{int(m[1]) - 2}.{m[2]}.{_BLOCK[m[3]]}.{m[4]}" if m[3] in _BLOCK else None),
    (r"audio_model\.conv1\.(\d)\.(.+)", lambda m: f"audio.net.{m[1]}.{m[2]}"),
    (r"audio_model\.block([1-4])\.(\w+)\.(.+)",
     lambda m: f"audio.net.{3 + 6 * (int(m[1]) - 1) + _AUDIO[m[2]]}.{m[3]}" if m[2] in _AUDIO else None),
    (r"(video|audio)_proj\.projection\.(\d+)\.(.+)", lambda m: f"{m[1]}_head.mlp.{m[2]}.{m[3]}"),
]


class ReleasedLayoutError(LayoutError):
    """The tensors do not form the released model: names left over or missing (a few of each)."""

    def __init__(self, unexpected: list[str], missing: list[str]) -> None:
        super().__init__("the released AVID/CMA model", unexpected, missing)


def _transposed(avssl_name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Audio convolution kernels swap their last two axes (time x frequency <-> frequency x time)."""
    return tensor.transpose(-1, -2) if avssl_name.startswith("audio.") and tensor.dim() == 4 else tensor


def from_released(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a released ``model`` state dict (with or without ``module.``) onto the names of ``expected`` (an
    :class:`AVModel`'s state dict); raises :class:`ReleasedLayoutError` unless every tensor maps to one of
    ``expected`` and every one of ``expected`` is given, with the same shapes."""
    try:
        return map_state(state, expected, lambda n: rename(_RULES, n), lambda n, t, _: _transposed(n, t), "")
    except LayoutError as e:
        raise ReleasedLayoutError(e.unexpected, e.missing) from None


def to_released(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`from_released`: an :class:`AVModel` state dict (the released architecture) under
    the released names, with ``module.`` (for tests and for sharing with the authors' code)."""
    inverse: dict[str, str] = {}
    for block, ours in _BLOCK.items():
        for stage in range(4):
            for b in range(8):
                inverse[f"video.stages.{stage}.{b}.{ours}"] = f"video_model.conv{stage + 2}x.{b}.{block}"
    for k in range(4):
        for layer, off in _AUDIO.items():
            inverse[f"audio.net.{3 + 6 * k + off}"] = f"audio_model.block{k + 1}.{layer}"
    out = {}
    for name, tensor in state.items():
        module, _, param = name.rpartition(".")
        if module.startswith(("video.stem.", "audio.net.")) and module.count(".") == 2 and module not in inverse:
            stem = "video_model.conv1" if module.startswith("video.") else "audio_model.conv1"
            released = f"{stem}.{module.rsplit('.', 1)[1]}"
        elif module.startswith(("video_head.mlp.", "audio_head.mlp.")):
            released = f"{module.split('_')[0]}_proj.projection.{module.rsplit('.', 1)[1]}"
        else:
            released = inverse[module]
        out[f"module.{released}.{param}"] = _transposed(name, tensor)
    return out
