from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

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


def _reference_colour(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """torchvision's per-frame adjust_* functions with the drawn parameters: x float (T, C, H, W)."""
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    if params[0] > 0:
        for op in params[5:].tolist():
            if op >= 0:
                x = ops[int(op)](x, float(params[1 + int(op)])).clamp(0, 1)
    return x


@pytest.mark.parametrize("seed", range(6))
def test_batched_colour_jitter_matches_torchvision_per_frame(seed):
    tf = VideoTransform(crop=32, train=True, cfg=VideoAugConfig(jitter_prob=0.7, hue=0.3))
    g = torch.Generator().manual_seed(seed)
    videos = [torch.randint(0, 256, (4, 40, 52, 3), dtype=torch.uint8, generator=g) for _ in range(5)]
    parts = [tf.geometry(v, torch.Generator().manual_seed(seed * 10 + i)) for i, v in enumerate(videos)]
    x = torch.stack([p[0] for p in parts])
    params = torch.stack([p[1] for p in parts])
    out = tf.finish(x, params)  # the batch at once
    mean, std = torch.tensor(tf.cfg.mean)[:, None, None], torch.tensor(tf.cfg.std)[:, None, None]
    for b in range(len(videos)):
        ref = _reference_colour(x[b].permute(1, 0, 2, 3).float() / 255, params[b])
        ref = ((ref - mean) / std).permute(1, 0, 2, 3)
        torch.testing.assert_close(out[b], ref, atol=2e-5, rtol=0)
        single = tf(videos[b], torch.Generator().manual_seed(seed * 10 + b))  # the per-item path
        torch.testing.assert_close(single, out[b], atol=1e-6, rtol=0)
    assert (params[:, 0] > 0).any()


def test_batched_masks_equal_per_item_masks():
    tf = AudioTransform(train=True, cfg=AudioAugConfig(time_masks=2, time_mask_width=10, freq_masks=2,
                                                       freq_mask_width=6))
    specs = torch.randn(4, 40, 100)
    params = torch.stack([tf.mask_params(40, 100, torch.Generator().manual_seed(i)) for i in range(4)])
    batched = AudioTransform.apply_masks(specs, params)
    for i in range(4):
        one = tf.spectrogram(specs[i], torch.Generator().manual_seed(i))
        assert torch.equal(batched[i], one)
        for axis, start, width in params[i].tolist():  # the masked bands hold the mean
            band = one[:, start : start + width] if axis == 0 else one[start : start + width]
            assert torch.allclose(band, specs[i].mean().expand_as(band))
    assert AudioTransform(train=False).mask_params(40, 100).shape == (0, 3)


def test_three_evaluation_crops_come_from_one_resize():
    v = _video(h=48, w=80)
    three, _ = VideoTransform(crop=40, train=False, positions=(0.5, 0.0, 1.0)).geometry(v)
    assert three.shape == (3, 3, 8, 40, 40)
    for k, pos in enumerate((0.5, 0.0, 1.0)):
        one, _ = VideoTransform(crop=40, train=False, positions=(pos,)).geometry(v)
        assert torch.equal(three[k], one)
    left, right = three[1], three[2]  # resized to 40x67: the left and right crops are its two ends
    assert not torch.equal(left, right)


def test_eval_resize_keeps_the_aspect_then_takes_the_centre():
    # UCF-101/HMDB-51 as released: short side to 256, then the centre 224 (no second resize to 224)
    v = _video(h=240, w=320)
    tf = VideoTransform(crop=224, train=False, cfg=VideoAugConfig(resize=256))
    x, _ = tf.geometry(v)
    ref = TF.resize(v.permute(0, 3, 1, 2), 256, antialias=True)  # (T, C, 256, 341)
    assert ref.shape[-2:] == (256, 341)
    assert torch.equal(x, TF.center_crop(ref, [224, 224]).permute(1, 0, 2, 3))


def test_resize_then_random_crop_on_a_wide_frame():
    # The released Kinetics linear evaluation: every frame to 256x256 (aspect not kept), a random 224 crop, flip,
    # colour jitter; at test time the centre 224 of the same resize. Works on any aspect (here 2.35:1).
    v = _video(h=102, w=240)
    cfg = VideoAugConfig(geometry="resize_crop", resize=64, keep_aspect=False, flip=0.0, jitter_prob=1.0)
    square = TF.resize(v.permute(0, 3, 1, 2), [64, 64], antialias=True)
    corners = set()
    for seed in range(8):
        x, params = VideoTransform(crop=48, train=True, cfg=cfg).geometry(v, torch.Generator().manual_seed(seed))
        assert x.shape == (3, 8, 48, 48) and params[0] == 1.0  # jitter drawn
        found = [(i, j) for i in range(17) for j in range(17)
                 if torch.equal(x, square[..., i:i + 48, j:j + 48].permute(1, 0, 2, 3))]
        assert len(found) >= 1
        corners.add(found[0])
    assert len(corners) > 4  # the crop moves
    x, _ = VideoTransform(crop=48, train=False, cfg=cfg).geometry(v)
    assert torch.equal(x, square[..., 8:56, 8:56].permute(1, 0, 2, 3))
