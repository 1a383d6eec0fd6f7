"""Clip transforms. Video: uint8 (T, H, W, C) -> float (C, T, H, W), every frame transformed with the
same random parameters. Audio: volume jitter on the waveform, time/frequency masking on the log-mel."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF

__all__ = ["AudioAugConfig", "AudioTransform", "VideoAugConfig", "VideoTransform"]


@dataclass
class VideoAugConfig:
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop: area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5  # probability of a horizontal flip
    jitter_prob: float = 0.8  # probability of applying colour jitter
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)  # Kinetics statistics
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)


@dataclass
class AudioAugConfig:
    volume: float = 0.1  # gain drawn from [1 - volume, 1 + volume]
    time_masks: int = 0
    time_mask_width: int = 20  # spectrogram frames
    freq_masks: int = 0
    freq_mask_width: int = 10  # mel bins


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _crop_params(h: int, w: int, scale, ratio, g) -> tuple[int, int, int, int]:
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], g)
        aspect = math.exp(_uniform(*log_ratio, g))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            i = int(torch.randint(0, h - ch + 1, (), generator=g))
            j = int(torch.randint(0, w - cw + 1, (), generator=g))
            return i, j, ch, cw
    side = min(h, w)  # fallback: centre square
    return (h - side) // 2, (w - side) // 2, side, side


class VideoTransform:
    """Training (random resized crop, flip, colour jitter) or evaluation (centre crop) transform."""

    def __init__(self, crop: int, train: bool, cfg: VideoAugConfig | None = None) -> None:
        self.crop = crop
        self.train = train
        self.cfg = cfg or VideoAugConfig()

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2)  # (T, C, H, W)
        h, w = x.shape[-2:]
        cfg, g = self.cfg, generator
        if self.train:
            i, j, ch, cw = _crop_params(h, w, cfg.crop_scale, cfg.crop_ratio, g)
            x = TF.resized_crop(x, i, j, ch, cw, [self.crop, self.crop], antialias=True)
            if float(torch.rand((), generator=g)) < cfg.flip:
                x = TF.horizontal_flip(x)
            x = x.float().div_(255)
            if float(torch.rand((), generator=g)) < cfg.jitter_prob:
                x = self._jitter(x, g)
        else:
            if min(h, w) != self.crop:
                x = TF.resize(x, self.crop, antialias=True)
            x = TF.center_crop(x, [self.crop, self.crop]).float().div_(255)
        x = TF.normalize(x, list(cfg.mean), list(cfg.std))
        return x.permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)

    def _jitter(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        cfg = self.cfg
        ops = []
        if cfg.brightness:
            f = _uniform(1 - cfg.brightness, 1 + cfg.brightness, g)
            ops.append(lambda v: TF.adjust_brightness(v, f))
        if cfg.contrast:
            c = _uniform(1 - cfg.contrast, 1 + cfg.contrast, g)
            ops.append(lambda v: TF.adjust_contrast(v, c))
        if cfg.saturation:
            s = _uniform(1 - cfg.saturation, 1 + cfg.saturation, g)
            ops.append(lambda v: TF.adjust_saturation(v, s))
        if cfg.hue:
            hh = _uniform(-cfg.hue, cfg.hue, g)
            ops.append(lambda v: TF.adjust_hue(v, hh))
        for k in torch.randperm(len(ops), generator=g).tolist():
            x = ops[k](x)
        return x.clamp_(0, 1)


class AudioTransform:
    """Volume jitter (waveform) and time/frequency masking (log-mel); identity when not training."""

    def __init__(self, train: bool, cfg: AudioAugConfig | None = None) -> None:
        self.train = train
        self.cfg = cfg or AudioAugConfig()

    def waveform(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.train or not self.cfg.volume:
            return wave
        return wave * _uniform(1 - self.cfg.volume, 1 + self.cfg.volume, generator)

    def spectrogram(self, spec: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mask ``(..., F, T)`` with the spectrogram's mean value."""
        if not self.train:
            return spec
        spec = spec.clone()
        fill = spec.mean()
        n_f, n_t = spec.shape[-2:]
        for count, width, size, dim in (
            (self.cfg.time_masks, self.cfg.time_mask_width, n_t, -1),
            (self.cfg.freq_masks, self.cfg.freq_mask_width, n_f, -2),
        ):
            for _ in range(count):
                wdt = int(torch.randint(0, min(width, size) + 1, (), generator=generator))
                s = int(torch.randint(0, size - wdt + 1, (), generator=generator))
                spec.narrow(dim, s, wdt).fill_(fill)
        return spec
