"""Waveform -> log spectrogram (torchaudio), usable per sample or on a batch on any device.

Two kinds: a mel spectrogram (our default, librosa-compatible) and the linear-frequency spectrogram of the
released AVID/CMA code (``kind="linear"``: an STFT of ``n_fft * fft_oversample`` points whose bins past DC
are averaged in groups of ``fft_oversample``, giving ``n_fft // 2 + 1`` bins; in decibels with ``log="db"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torchaudio

__all__ = ["LogMelSpectrogram", "MelConfig"]


@dataclass
class MelConfig:
    """Spectrogram parameters. Defaults: 16 kHz, 100 frames per second, librosa-compatible mel bank."""

    sample_rate: int = 16000
    kind: Literal["mel", "linear"] = "mel"
    n_fft: int = 512
    win_length: int | None = 400  # 25 ms at 16 kHz; None -> n_fft
    hop_length: int = 160  # 10 ms -> 100 spectrogram frames per second
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None  # None -> sample_rate / 2
    power: float = 2.0
    mel_scale: str = "slaney"  # "slaney" (librosa's default) or "htk"
    norm: str | None = "slaney"  # filter normalization, as librosa's default
    center: bool = True
    pad_mode: str = "constant"  # librosa >= 0.10 pads with zeros
    log: Literal["ln", "db"] = "ln"  # ln(power + log_offset), or 10 log10(max(power, 1e-10)) floored at max - top_db
    log_offset: float = 1e-6
    top_db: float | None = 100.0
    fft_oversample: int = 1  # linear kind: STFT of n_fft * fft_oversample points, bins averaged back (released: 2)
    trim_to_duration: bool = False  # keep samples // hop_length frames (released: 200 for 2 s), not the centred +1
    normalize: bool = False  # standardize each spectrogram to zero mean, unit variance


class LogMelSpectrogram(torch.nn.Module):
    """``(..., samples)`` float waveform -> ``(..., bins, frames)`` log spectrogram (mel or linear, by config)."""

    def __init__(self, cfg: MelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MelConfig()
        if cfg.kind == "linear":
            n = cfg.n_fft * cfg.fft_oversample
            self.mel = torchaudio.transforms.Spectrogram(
                n_fft=n, win_length=cfg.win_length * cfg.fft_oversample if cfg.win_length else n,
                hop_length=cfg.hop_length, power=cfg.power, center=cfg.center, pad_mode=cfg.pad_mode,
            )
            return
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            power=cfg.power,
            center=cfg.center,
            pad_mode=cfg.pad_mode,
            norm=cfg.norm,
            mel_scale=cfg.mel_scale,
        )

    @property
    def num_bins(self) -> int:
        """Frequency bins of the output."""
        return self.cfg.n_fft // 2 + 1 if self.cfg.kind == "linear" else self.cfg.n_mels

    def num_frames(self, num_samples: int) -> int:
        """Spectrogram frames produced for a waveform of ``num_samples``."""
        cfg = self.cfg
        if cfg.trim_to_duration:
            return num_samples // cfg.hop_length
        if cfg.center:
            return num_samples // cfg.hop_length + 1
        return (num_samples - cfg.n_fft * (cfg.fft_oversample if cfg.kind == "linear" else 1)) // cfg.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        power = self.mel(waveform.float())
        if cfg.kind == "linear" and cfg.fft_oversample > 1:
            k = cfg.fft_oversample
            rest = power[..., 1:, :]
            rest = rest.reshape(*rest.shape[:-2], rest.shape[-2] // k, k, rest.shape[-1]).mean(-2)
            power = torch.cat([power[..., :1, :], rest], dim=-2)
        if cfg.trim_to_duration:
            power = power[..., : self.num_frames(waveform.shape[-1])]
        if cfg.log == "db":
            spec = 10 * torch.log10(power.clamp_min(1e-10))
            if cfg.top_db is not None:
                peak = spec.amax(dim=(-2, -1), keepdim=True)
                spec = torch.maximum(spec, peak - cfg.top_db)
        else:
            spec = torch.log(power + cfg.log_offset)
        if self.cfg.normalize:
            mean = spec.mean(dim=(-2, -1), keepdim=True)
            std = spec.std(dim=(-2, -1), keepdim=True)
            spec = (spec - mean) / (std + 1e-5)
        return spec
