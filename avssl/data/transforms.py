"""Clip transforms. Video: uint8 (T, H, W, C) -> float (C, T, H, W), every frame transformed with the
same random parameters. Audio: volume jitter on the waveform, time/frequency masking on the log-mel."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torchvision.transforms.v2.functional as TF

__all__ = ["AudioAugConfig", "AudioTransform", "VideoAugConfig", "VideoTransform"]


@dataclass
class VideoAugConfig:
    # training geometry: "resized_crop" (a random area and aspect of the frame, resized to the crop) or
    # "resize_crop" (the frame resized to `resize`, then a random crop: the released Kinetics linear evaluation)
    geometry: Literal["resized_crop", "resize_crop"] = "resized_crop"
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random resized crop: area fraction
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # before a crop of fixed size (resize_crop training, evaluation): the frame's short side is resized to this
    # (None: the crop size), or with keep_aspect false both sides (the released Kinetics linear evaluation)
    resize: int | None = None
    keep_aspect: bool = True
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # of every resize (EZ-VSL, SLAVC: bicubic)
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
    """Training (random resized crop, flip, colour jitter) or evaluation (centre crop) transform.

    Two halves, so that the per-pixel work can run on a whole batch on a GPU: :meth:`geometry` (crop,
    resize, flip on uint8 frames; draws every random parameter) and :meth:`finish` (float conversion,
    colour jitter with the drawn parameters, normalization; batched). Calling the transform runs both.
    """

    def __init__(self, crop: int, train: bool, cfg: VideoAugConfig | None = None,
                 positions: tuple[float, ...] = (0.5,)) -> None:
        """``positions``: evaluation crops along the longer side, 0 (left/top) to 1 (right/bottom); 0.5 centre.
        With several, :meth:`geometry` returns them stacked, ``(crops, C, T, crop, crop)``, from one resize."""
        self.crop = crop
        self.train = train
        self.cfg = cfg or VideoAugConfig()
        self.positions = tuple(positions)

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 ``(T, H, W, C)`` -> float ``(C, T, crop, crop)``."""
        x, params = self.geometry(frames, generator)
        return self.finish(x[None], params[None])[0]

    def geometry(
        self, frames: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(T, H, W, C)`` -> (uint8 ``(C, T, crop, crop)``, colour parameters ``(9,)`` for :meth:`finish`)."""
        x = frames.permute(0, 3, 1, 2)  # (T, C, H, W)
        h, w = x.shape[-2:]
        cfg, g = self.cfg, generator
        params = torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, -1.0, -1.0, -1.0, -1.0])
        if self.train and cfg.geometry == "resized_crop":
            i, j, ch, cw = _crop_params(h, w, cfg.crop_scale, cfg.crop_ratio, g)
            x = TF.resized_crop(x, i, j, ch, cw, [self.crop, self.crop], interpolation=self._mode, antialias=True)
        else:
            x = self._resize(x)
            h, w = x.shape[-2:]
            if not self.train:
                crops = [TF.crop(x, round(p * (h - self.crop)) if h > self.crop else 0,
                                 round(p * (w - self.crop)) if w > self.crop else 0, self.crop, self.crop)
                         for p in self.positions]
                crops = [c.permute(1, 0, 2, 3) for c in crops]
                return (crops[0] if len(crops) == 1 else torch.stack(crops)).contiguous(), params
            i = int(torch.randint(0, max(h - self.crop, 0) + 1, (), generator=g))
            j = int(torch.randint(0, max(w - self.crop, 0) + 1, (), generator=g))
            x = TF.crop(x, i, j, self.crop, self.crop)
        if float(torch.rand((), generator=g)) < cfg.flip:
            x = TF.horizontal_flip(x)
        if float(torch.rand((), generator=g)) < cfg.jitter_prob:
            params = self._jitter_params(g)
        return x.permute(1, 0, 2, 3).contiguous(), params

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Before a fixed-size crop: the short side to ``resize`` (or the crop size), or both sides."""
        size = self.cfg.resize or self.crop
        if not self.cfg.keep_aspect:
            return x if tuple(x.shape[-2:]) == (size, size) else TF.resize(x, [size, size], interpolation=self._mode,
                                                                            antialias=True)
        return x if min(x.shape[-2:]) == size else TF.resize(x, size, interpolation=self._mode, antialias=True)

    @property
    def _mode(self) -> TF.InterpolationMode:
        return TF.InterpolationMode.BICUBIC if self.cfg.interpolation == "bicubic" else TF.InterpolationMode.BILINEAR

    def _jitter_params(self, g: torch.Generator | None) -> torch.Tensor:
        """[applied, brightness, contrast, saturation, hue, order of the ops (ids, -1 = unused)]."""
        cfg = self.cfg
        p = [1.0, 1.0, 1.0, 1.0, 0.0]
        ops = []
        for op, amount in enumerate((cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)):
            if amount:
                lo, hi = (-amount, amount) if op == _HUE else (1 - amount, 1 + amount)
                p[1 + op] = _uniform(lo, hi, g)
                ops.append(op)
        order = [float(ops[k]) for k in torch.randperm(len(ops), generator=g).tolist()]
        return torch.tensor(p + order + [-1.0] * (4 - len(order)))

    def finish(self, video: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, T, H, W)`` (any device) and ``params (B, 9)`` (CPU) -> normalized float video."""
        x = video.float().div_(255)
        for k in range(4):
            for op in range(4):
                rows = torch.nonzero((params[:, 0] > 0) & (params[:, 5 + k] == op)).flatten()
                if len(rows) == 0:
                    continue
                rows_d = rows.to(x.device, non_blocking=True)
                amount = params[rows, 1 + op].to(x.device, non_blocking=True).view(-1, 1, 1, 1, 1)
                x[rows_d] = _COLOUR_OPS[op](x[rows_d], amount)
        mean = _constant(tuple(self.cfg.mean), torch.float32, x.device).view(1, 3, 1, 1, 1)
        std = _constant(tuple(self.cfg.std), torch.float32, x.device).view(1, 3, 1, 1, 1)
        return x.sub_(mean).div_(std)


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small constant tensor on ``device``, made once per device: a tensor made from a list on a GPU is a copy
    the host waits for, which a training step must not contain."""
    key = (values, dtype, str(device))
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return _CONSTANTS[key]


# Colour operations on float (B, 3, T, H, W) in [0, 1] with one amount per clip (B, 1, 1, 1, 1); the same
# arithmetic as torchvision's adjust_* functions applied to each frame (tests compare them).
_HUE = 3


def _blend(a: torch.Tensor, b: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (a * ratio + b * (1 - ratio)).clamp_(0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (r * 0.2989 + g * 0.587 + b * 0.114).unsqueeze(1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp_(0, 1)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x).mean(dim=(1, 3, 4), keepdim=True), f)  # mean grey level of each frame


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray(x), f)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    delta = maxc - minc
    flat = delta == 0
    s = delta / torch.where(flat, torch.ones_like(maxc), maxc)
    d = torch.where(flat, torch.ones_like(delta), delta)
    h = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = torch.where(flat, torch.zeros_like(h), h).div_(6).remainder_(1.0)
    h = (h + shift.squeeze(1)).remainder_(1.0)
    # HSV -> RGB: sector i of the hue circle picks (v, p, q, t) for each of r, g, b
    h6 = h * 6
    i = torch.floor(h6)
    f = h6 - i
    v = maxc
    p = (v * (1 - s)).clamp_(0, 1)
    q = (v * (1 - s * f)).clamp_(0, 1)
    t = (v * (1 - s * (1 - f))).clamp_(0, 1)
    vpqt = torch.stack((v, p, q, t), dim=1)
    table = _constant(((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2)), torch.long, x.device)
    pick = table[:, i.long().remainder_(6)].movedim(0, 1)  # (B, 3, T, H, W)
    return vpqt.gather(1, pick)


_COLOUR_OPS = (_brightness, _contrast, _saturation, _hue)


class AudioTransform:
    """Volume jitter (waveform) and time/frequency masking (log-mel); identity when not training.

    Masks too come in two halves for batched use: :meth:`mask_params` draws them, :meth:`apply_masks`
    applies them to a batch of spectrograms on any device.
    """

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
        params = self.mask_params(spec.shape[-2], spec.shape[-1], generator)
        return self.apply_masks(spec.reshape(1, *spec.shape[-2:]), params[None]).reshape(spec.shape)

    def mask_params(self, n_freq: int, n_time: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(masks, 3)`` long rows of [axis (0 time, 1 frequency), start, width]; none when not training."""
        rows = []
        if self.train:
            for count, width, size, axis in (
                (self.cfg.time_masks, self.cfg.time_mask_width, n_time, 0),
                (self.cfg.freq_masks, self.cfg.freq_mask_width, n_freq, 1),
            ):
                for _ in range(count):
                    wdt = int(torch.randint(0, min(width, size) + 1, (), generator=generator))
                    s = int(torch.randint(0, size - wdt + 1, (), generator=generator))
                    rows.append([axis, s, wdt])
        return torch.tensor(rows, dtype=torch.long).reshape(-1, 3)

    @staticmethod
    def apply_masks(spec: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """``spec (B, F, T)``, ``params (B, masks, 3)`` -> masked copy (fill: each spectrogram's mean)."""
        if params.shape[1] == 0:
            return spec
        params = params.to(spec.device, non_blocking=True)
        n_f, n_t = spec.shape[-2:]
        axis, start, width = (params[..., j, None] for j in range(3))  # (B, masks, 1)
        t = torch.arange(n_t, device=spec.device)
        f = torch.arange(n_f, device=spec.device)
        in_t = ((axis == 0) & (t >= start) & (t < start + width)).any(1)  # (B, T)
        in_f = ((axis == 1) & (f >= start) & (f < start + width)).any(1)  # (B, F)
        mask = in_t[:, None, :] | in_f[:, :, None]
        fill = spec.mean(dim=(-2, -1), keepdim=True).expand_as(spec)
        return torch.where(mask, fill, spec)
