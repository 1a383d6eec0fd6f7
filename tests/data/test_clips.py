from __future__ import annotations

import pytest
import torch

from avssl.data.clips import ClipConfig, RandomClipSampler, UniformClipSampler, clip_span


def test_span_covers_video_and_centred_audio():
    cfg = ClipConfig(video_duration=0.5, audio_duration=2.0)
    assert clip_span(cfg) == pytest.approx((-0.75, 1.25))
    assert clip_span(cfg, 0.25) == pytest.approx((-0.5, 1.5))
    assert clip_span(ClipConfig(video_duration=1.0, audio_duration=0.0)) == (0.0, 1.0)


def test_random_clips_stay_inside_the_media():
    cfg = ClipConfig(video_duration=0.5, audio_duration=2.0, max_av_offset=0.3)
    sampler = RandomClipSampler(cfg)
    g = torch.Generator().manual_seed(0)
    starts, offsets = [], []
    for _ in range(500):
        spec = sampler(10.0, g)
        lo, hi = clip_span(cfg, spec.audio_offset)
        assert spec.start + lo >= -1e-9 and spec.start + hi <= 10.0 + 1e-9
        starts.append(spec.start)
        offsets.append(spec.audio_offset)
    assert min(starts) < 1.5 and max(starts) > 8.0  # spread over the video
    assert min(offsets) < -0.25 and max(offsets) > 0.25 and max(map(abs, offsets)) <= 0.3


def test_random_clip_is_deterministic_given_a_generator():
    s = RandomClipSampler(ClipConfig())
    a = [s(5.0, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert a[0] == a[1]


def test_short_media_centres_the_clip():
    cfg = ClipConfig(video_duration=0.5, audio_duration=2.0)
    spec = RandomClipSampler(cfg)(1.0)
    assert spec.start == pytest.approx(0.25)  # frames centred, the decoder pads the audio


def test_uniform_clips_are_evenly_spaced():
    cfg = ClipConfig(video_duration=0.5, audio_duration=2.0)
    specs = UniformClipSampler(cfg, 5)(10.0)
    starts = [s.start for s in specs]
    assert starts[0] == pytest.approx(0.75) and starts[-1] == pytest.approx(10.0 - 1.25)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert max(gaps) - min(gaps) < 1e-9
    assert UniformClipSampler(cfg, 1)(10.0)[0].start == pytest.approx((0.75 + 8.75) / 2)
    with pytest.raises(ValueError):
        UniformClipSampler(cfg, 0)
