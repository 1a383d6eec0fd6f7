"""Waveform -> log-mel spectrogram (torchaudio), usable per sample or on a batch on any device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio

__all__ = ["LogMelSpectrogram", "MelConfig"]


@dataclass
class MelConfig:
    """Spectrogram parameters. Defaults: 16 kHz, 100 frames per second, librosa-compatible mel bank."""

    sample_rate: int = 16000
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
    log_offset: float = 1e-6  # log(mel + log_offset)
    normalize: bool = False  # standardize each spectrogram to zero mean, unit variance


class LogMelSpectrogram(torch.nn.Module):
    """``(..., samples)`` float waveform -> ``(..., n_mels, frames)`` log-mel spectrogram."""

    def __init__(self, cfg: MelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or MelConfig()
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

    def num_frames(self, num_samples: int) -> int:
        """Spectrogram frames produced for a waveform of ``num_samples``."""
        if self.cfg.center:
            return num_samples // self.cfg.hop_length + 1
        return (num_samples - self.cfg.n_fft) // self.cfg.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = torch.log(self.mel(waveform.float()) + self.cfg.log_offset)
        if self.cfg.normalize:
            mean = spec.mean(dim=(-2, -1), keepdim=True)
            std = spec.std(dim=(-2, -1), keepdim=True)
            spec = (spec - mean) / (std + 1e-5)
        return spec
