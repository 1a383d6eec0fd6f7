from __future__ import annotations

import torch

from avssl.data.transforms import AudioAugConfig, AudioTransform, VideoAugConfig, VideoTransform


def _video(t=8, h=72, w=96):
    frame = torch.randint(0, 256, (1, h, w, 3), dtype=torch.uint8)
    return frame.expand(t, h, w, 3).contiguous()


def test_train_transform_is_identical_across_frames():
    tf = VideoTransform(crop=48, train=True, cfg=VideoAugConfig(jitter_prob=1.0, flip=0.5))
    for seed in range(10):
        out = tf(_video(), torch.Generator().manual_seed(seed))
        assert out.shape == (3, 8, 48, 48) and out.dtype == torch.float32
        assert torch.allclose(out, out[:, :1].expand_as(out))  # same frame in -> same frame out


def test_train_transform_varies_between_calls_and_is_seedable():
    tf = VideoTransform(crop=48, train=True)
    v = _video()
    a = tf(v, torch.Generator().manual_seed(1))
    b = tf(v, torch.Generator().manual_seed(1))
    c = tf(v, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eval_transform_is_a_deterministic_centre_crop():
    tf = VideoTransform(crop=64, train=False)
    v = _video(h=64, w=96)
    out = tf(v)
    assert out.shape == (3, 8, 64, 64)
    assert torch.equal(out, tf(v))
    cfg = tf.cfg
    expected = (v[0, :, 16:80].permute(2, 0, 1).float() / 255 - torch.tensor(cfg.mean)[:, None, None]) / torch.tensor(
        cfg.std
    )[:, None, None]
    assert torch.allclose(out[:, 0], expected, atol=1e-5)


def test_audio_volume_and_masks():
    tf = AudioTransform(train=True, cfg=AudioAugConfig(volume=0.5, time_masks=2, time_mask_width=10,
                                                       freq_masks=1, freq_mask_width=5))
    g = torch.Generator().manual_seed(0)
    wave = torch.ones(100)
    gains = {float(tf.waveform(wave, g)[0]) for _ in range(20)}
    assert len(gains) > 1 and all(0.5 <= x <= 1.5 for x in gains)
    spec = torch.randn(40, 100)
    masked = tf.spectrogram(spec, torch.Generator().manual_seed(3))
    changed = masked != spec
    assert changed.any() and changed.float().mean() < 0.5
    assert torch.equal(AudioTransform(train=False).spectrogram(spec), spec)
