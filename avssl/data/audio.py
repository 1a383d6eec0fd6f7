"""Waveform -> log spectrogram (torchaudio), usable per sample or on a batch on any device.

Three kinds: a mel spectrogram (our default, librosa-compatible), the linear-frequency spectrogram of the
released AVID/CMA code (``kind="linear"``: an STFT of ``n_fft * fft_oversample`` points whose bins past DC
are averaged in groups of ``fft_oversample``, giving ``n_fft // 2 + 1`` bins; in decibels with ``log="db"``), and
``kind="psd"``, what ``scipy.signal.spectrogram`` computes by default (the EZ-VSL and SLAVC front end): segments of
``n_fft`` samples every ``hop_length`` without padding, each less its mean, under a periodic Tukey window
(``tukey_alpha``), the one-sided power spectral density (``|X|^2 / (rate * sum(window^2))``, bins between DC and
Nyquist doubled), in float64. ``clip_input`` clips the waveform to [-1, 1] first; ``divide_by`` divides the log
spectrogram at the end (their ``Normalize(0, 12)``).

Normalization, by name: ``none``; ``per_spectrogram`` (each spectrogram to zero mean and unit variance: it
erases absolute loudness); ``per_frequency`` (``(x - mean) / (std + 1e-5)`` per bin with fixed statistics,
as the released models were trained: ``norm_stats`` names the statistics carried with avssl
(``avid-cma-audioset``) or a ``.npz``/``.json`` file holding ``mean`` and ``std``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torchaudio
from einops import reduce

__all__ = ["BUILTIN_NORM_STATS", "Spectrogram", "SpectrogramConfig", "load_norm_stats"]

_ASSETS = Path(__file__).resolve().parent / "assets"
# statistics carried with avssl, by name (source and licence inside each file)
BUILTIN_NORM_STATS = {"avid-cma-audioset": _ASSETS / "avid_cma_spectdb_24k_257_stats.json"}


@dataclass
class SpectrogramConfig:
    """Spectrogram parameters. Defaults: 16 kHz, 100 frames per second, librosa-compatible mel bank."""

    sample_rate: int = 16000
    kind: Literal["mel", "linear", "psd"] = "mel"
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
    # none | per_spectrogram (each to zero mean, unit variance) | per_frequency (fixed statistics, norm_stats);
    # true/false (configs before per_frequency existed) read as per_spectrogram/none
    normalize: bool | Literal["none", "per_spectrogram", "per_frequency"] = "none"
    norm_stats: str | None = None  # per_frequency: "avid-cma-audioset" (carried with avssl) or a .npz/.json path
    tukey_alpha: float = 0.25  # psd: the window's taper (scipy's default window is ("tukey", 0.25))
    clip_input: bool = False  # clip the waveform to [-1, 1] first (EZ-VSL, SLAVC)
    divide_by: float = 1.0  # the log spectrogram divided by this at the end (EZ-VSL, SLAVC: 12)

    def __post_init__(self) -> None:
        if isinstance(self.normalize, bool):
            self.normalize = "per_spectrogram" if self.normalize else "none"
        if (self.normalize == "per_frequency") != (self.norm_stats is not None):
            from ..config import ConfigError

            raise ConfigError("spectrogram.norm_stats is needed by, and only by, spectrogram.normalize: per_frequency "
                              f"(got normalize={self.normalize!r}, norm_stats={self.norm_stats!r})")


def load_norm_stats(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, std)`` per frequency bin: a name of :data:`BUILTIN_NORM_STATS`, or a ``.npz`` / ``.json`` file
    with ``mean`` and ``std`` (e.g. the authors' ``audio-spectDB-24k-513-norm-stats.npz``)."""
    path = BUILTIN_NORM_STATS.get(name, Path(name))
    if not path.is_file():
        raise FileNotFoundError(f"spectrogram.norm_stats: {name!r} is neither {sorted(BUILTIN_NORM_STATS)} nor a file")
    if path.suffix == ".json":
        data = json.loads(path.read_text())
    else:
        with np.load(path) as z:
            data = {"mean": z["mean"], "std": z["std"]}
    mean, std = (np.asarray(data[k], np.float32).ravel() for k in ("mean", "std"))
    if mean.shape != std.shape:
        raise ValueError(f"{path}: mean and std differ in length ({len(mean)}, {len(std)})")
    return mean, std


class Spectrogram(torch.nn.Module):
    """``(..., samples)`` float waveform -> ``(..., bins, frames)`` log spectrogram (mel or linear, by config).

    Its buffers (window, filter bank, statistics) follow the module to a device but are not part of a state
    dict: they are functions of the config."""

    def __init__(self, cfg: SpectrogramConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or SpectrogramConfig()
        self.spec = self._transform(cfg)
        if cfg.normalize == "per_frequency":
            mean, std = load_norm_stats(cfg.norm_stats)
            if len(mean) != self.num_bins:
                raise ValueError(f"spectrogram.norm_stats {cfg.norm_stats!r} has {len(mean)} bins, the spectrogram {self.num_bins}")
            self.register_buffer("stats_mean", torch.from_numpy(mean)[:, None])
            self.register_buffer("stats_scale", torch.from_numpy(std)[:, None] + 1e-5)
        for module in self.modules():
            for name, buf in list(module.named_buffers(recurse=False)):
                module.register_buffer(name, buf, persistent=False)

    @staticmethod
    def _transform(cfg: SpectrogramConfig) -> torch.nn.Module:
        if cfg.kind == "psd":
            return _PowerSpectralDensity(cfg)
        if cfg.kind == "linear":
            n = cfg.n_fft * cfg.fft_oversample
            return torchaudio.transforms.Spectrogram(
                n_fft=n, win_length=cfg.win_length * cfg.fft_oversample if cfg.win_length else n,
                hop_length=cfg.hop_length, power=cfg.power, center=cfg.center, pad_mode=cfg.pad_mode,
            )
        return torchaudio.transforms.MelSpectrogram(
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
        return self.cfg.n_fft // 2 + 1 if self.cfg.kind in ("linear", "psd") else self.cfg.n_mels

    def num_frames(self, num_samples: int) -> int:
        """Spectrogram frames produced for a waveform of ``num_samples``."""
        cfg = self.cfg
        if cfg.trim_to_duration:
            return num_samples // cfg.hop_length
        if cfg.kind == "psd":
            return (num_samples - cfg.n_fft) // cfg.hop_length + 1
        if cfg.center:
            return num_samples // cfg.hop_length + 1
        return (num_samples - cfg.n_fft * (cfg.fft_oversample if cfg.kind == "linear" else 1)) // cfg.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.clip_input:
            waveform = waveform.clamp(-1.0, 1.0)
        power = self.spec(waveform if cfg.kind == "psd" else waveform.float())
        if cfg.kind == "linear" and cfg.fft_oversample > 1:
            k = cfg.fft_oversample
            rest = reduce(power[..., 1:, :], "... (f k) t -> ... f t", "mean", k=k)  # bins past DC, averaged in k's
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
        if cfg.normalize == "per_spectrogram":
            mean = spec.mean(dim=(-2, -1), keepdim=True)
            std = spec.std(dim=(-2, -1), keepdim=True)
            spec = (spec - mean) / (std + 1e-5)
        elif cfg.normalize == "per_frequency":
            spec = (spec - self.stats_mean) / self.stats_scale
        if cfg.divide_by != 1.0:
            spec = spec / cfg.divide_by
        return spec.float()


def tukey(n: int, alpha: float) -> torch.Tensor:
    """scipy's ``get_window(("tukey", alpha), n)``: the periodic Tukey window (a symmetric one of ``n + 1`` points
    without its last), float64."""
    m = n + 1
    if alpha <= 0:
        return torch.ones(n, dtype=torch.float64)
    k = torch.arange(m, dtype=torch.float64)
    width = int(np.floor(alpha * (m - 1) / 2.0))
    w = torch.ones(m, dtype=torch.float64)
    lo, hi = k[: width + 1], k[m - width - 1 :]
    w[: width + 1] = 0.5 * (1 + torch.cos(np.pi * (-1 + 2.0 * lo / alpha / (m - 1))))
    w[m - width - 1 :] = 0.5 * (1 + torch.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * hi / alpha / (m - 1))))
    return w[:n]


class _PowerSpectralDensity(torch.nn.Module):
    """``scipy.signal.spectrogram(x, rate, nperseg=n_fft, noverlap=n_fft - hop_length)`` with its defaults (see the
    module's description), on ``(..., samples)``, in float64: ``(..., n_fft // 2 + 1, frames)``."""

    def __init__(self, cfg: SpectrogramConfig) -> None:
        super().__init__()
        self.n, self.hop = cfg.n_fft, cfg.hop_length
        window = tukey(cfg.n_fft, cfg.tukey_alpha)
        self.register_buffer("window", window)
        self.scale = 1.0 / (cfg.sample_rate * float((window**2).sum()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.double().unfold(-1, self.n, self.hop)  # (..., frames, n)
        frames = (frames - frames.mean(-1, keepdim=True)) * self.window
        power = torch.fft.rfft(frames, n=self.n).abs().square() * self.scale
        power[..., 1 : -1 if self.n % 2 == 0 else None] *= 2  # one-sided: every bin but DC (and Nyquist) twice
        return power.transpose(-1, -2)
