from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from avssl.data.audio import LogMelSpectrogram, MelConfig


@pytest.mark.parametrize(
    "cfg",
    [
        MelConfig(),
        MelConfig(sample_rate=24000, n_fft=1024, win_length=None, hop_length=240, n_mels=128, f_min=50, f_max=11000),
        MelConfig(n_mels=40, mel_scale="htk", norm=None, log_offset=0.01),
    ],
    ids=["default", "24k-128mel", "htk-40mel"],
)
def test_log_mel_agrees_with_librosa(cfg):
    rng = np.random.default_rng(0)
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    y = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.shape)).astype(np.float32)
    ours = LogMelSpectrogram(cfg)(torch.from_numpy(y)).numpy()
    ref = librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.win_length, window="hann", center=cfg.center, pad_mode=cfg.pad_mode,
        power=cfg.power, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max,
        htk=cfg.mel_scale == "htk", norm=cfg.norm,
    )
    ref = np.log(ref + cfg.log_offset)
    assert ours.shape == ref.shape == (cfg.n_mels, LogMelSpectrogram(cfg).num_frames(len(y)))
    # Compare where there is energy (log of tiny values amplifies float32 rounding).
    mask = ref > np.log(cfg.log_offset) + 3
    assert mask.mean() > 0.5
    assert np.abs(ours[mask] - ref[mask]).max() < 1e-2


def test_batch_equals_items_and_frames_per_second():
    mel = LogMelSpectrogram()
    x = torch.randn(3, 32000)
    batch = mel(x)
    assert batch.shape == (3, 80, 201)  # 100 frames per second, centred frames
    for i in range(3):
        assert torch.allclose(batch[i], mel(x[i]), atol=1e-4)


def test_normalize_standardizes():
    spec = LogMelSpectrogram(MelConfig(normalize=True))(torch.randn(2, 16000))
    assert spec.mean(dim=(-2, -1)).abs().max() < 1e-3
    assert (spec.std(dim=(-2, -1)) - 1).abs().max() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_gpu():
    mel = LogMelSpectrogram().cuda()
    x = torch.randn(4, 32000)
    assert torch.allclose(mel(x.cuda()).cpu(), LogMelSpectrogram()(x), atol=1e-3)
