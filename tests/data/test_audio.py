from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from avssl.data.audio import Spectrogram, SpectrogramConfig


@pytest.mark.parametrize(
    "cfg",
    [
        SpectrogramConfig(),
        SpectrogramConfig(sample_rate=24000, n_fft=1024, win_length=None, hop_length=240, n_mels=128, f_min=50, f_max=11000),
        SpectrogramConfig(n_mels=40, mel_scale="htk", norm=None, log_offset=0.01),
    ],
    ids=["default", "24k-128mel", "htk-40mel"],
)
def test_log_mel_agrees_with_librosa(cfg):
    rng = np.random.default_rng(0)
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    y = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(t.shape)).astype(np.float32)
    ours = Spectrogram(cfg)(torch.from_numpy(y)).numpy()
    ref = librosa.feature.melspectrogram(
        y=y.astype(np.float64), sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
        win_length=cfg.win_length, window="hann", center=cfg.center, pad_mode=cfg.pad_mode,
        power=cfg.power, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max,
        htk=cfg.mel_scale == "htk", norm=cfg.norm,
    )
    ref = np.log(ref + cfg.log_offset)
    assert ours.shape == ref.shape == (cfg.n_mels, Spectrogram(cfg).num_frames(len(y)))
    # Compare where there is energy (log of tiny values amplifies float32 rounding).
    mask = ref > np.log(cfg.log_offset) + 3
    assert mask.mean() > 0.5
    assert np.abs(ours[mask] - ref[mask]).max() < 1e-2


def test_batch_equals_items_and_frames_per_second():
    mel = Spectrogram()
    x = torch.randn(3, 32000)
    batch = mel(x)
    assert batch.shape == (3, 80, 201)  # 100 frames per second, centred frames
    for i in range(3):
        assert torch.allclose(batch[i], mel(x[i]), atol=1e-4)


def test_normalize_standardizes():
    spec = Spectrogram(SpectrogramConfig(normalize="per_spectrogram"))(torch.randn(2, 16000))
    assert spec.mean(dim=(-2, -1)).abs().max() < 1e-3
    assert (spec.std(dim=(-2, -1)) - 1).abs().max() < 1e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_gpu():
    mel = Spectrogram().cuda()
    x = torch.randn(4, 32000)
    assert torch.allclose(mel(x.cuda()).cpu(), Spectrogram()(x), atol=1e-3)


def test_true_and_false_from_older_configs_read_as_named_normalizations():
    assert SpectrogramConfig(normalize=True).normalize == "per_spectrogram"
    assert SpectrogramConfig(normalize=False).normalize == "none"


def test_per_frequency_statistics_keep_loudness_where_per_spectrogram_erases_it():
    from avssl.data.audio import load_norm_stats

    cfg = SpectrogramConfig(sample_rate=24000, kind="linear", n_fft=512, win_length=None, hop_length=240, fft_oversample=2,
                    log="db", trim_to_duration=True)
    x = 0.1 * torch.randn(1, 48000, generator=torch.Generator().manual_seed(0))
    quiet = x * 10 ** (-40 / 20)  # 40 dB quieter
    plain = Spectrogram(cfg)(x)
    per_freq = Spectrogram(SpectrogramConfig(**{**cfg.__dict__, "normalize": "per_frequency",
                                              "norm_stats": "avid-cma-audioset"}))
    mean, std = load_norm_stats("avid-cma-audioset")
    assert len(mean) == len(std) == 257 and (std > 0).all()
    expected = (plain - torch.from_numpy(mean)[:, None]) / (torch.from_numpy(std)[:, None] + 1e-5)
    assert torch.allclose(per_freq(x), expected, atol=1e-5)
    assert (per_freq(x) - per_freq(quiet)).mean() == pytest.approx(40 / std.mean(), rel=0.05)
    per_spec = Spectrogram(SpectrogramConfig(**{**cfg.__dict__, "normalize": "per_spectrogram"}))
    # the 40 dB are gone (up to bins the quiet copy pushes to the dB floor): a shift of about 2 units above, ~0 here
    assert (per_spec(x) - per_spec(quiet)).abs().mean() < 0.01
    assert not per_freq.state_dict()  # statistics and window come from the config, not the checkpoint


def test_per_frequency_statistics_from_a_file_and_clear_errors(tmp_path):
    from avssl.config import ConfigError

    np.savez(tmp_path / "stats.npz", mean=np.full(41, 2.0, np.float32), std=np.full(41, 4.0, np.float32))
    cfg = SpectrogramConfig(n_mels=41, normalize="per_frequency", norm_stats=str(tmp_path / "stats.npz"))
    x = torch.randn(1, 16000)
    base = Spectrogram(SpectrogramConfig(n_mels=41))(x)
    assert torch.allclose(Spectrogram(cfg)(x), (base - 2) / (4 + 1e-5), atol=1e-5)
    with pytest.raises(ConfigError, match="norm_stats"):
        SpectrogramConfig(normalize="per_frequency")
    with pytest.raises(FileNotFoundError, match="avid-cma-audioset"):
        Spectrogram(SpectrogramConfig(normalize="per_frequency", norm_stats=str(tmp_path / "none.npz")))
    with pytest.raises(ValueError, match="41 bins"):
        Spectrogram(SpectrogramConfig(n_mels=80, normalize="per_frequency", norm_stats=str(tmp_path / "stats.npz")))
