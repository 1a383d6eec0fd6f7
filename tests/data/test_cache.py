"""Decode once: clips cut from the cache equal clips decoded from the file, and the cache is reused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avssl.config import ConfigError
from avssl.data.cache import ClipCache
from avssl.data.clips import ClipConfig
from avssl.data.collection import build_manifest, read_manifest
from avssl.data.datasets import AVClipDataset, DataConfig
from avssl.data.decode import DecodeError, decode_clip
from avssl.data.encode import write_av


@pytest.fixture
def entries(tmp_path):
    # lossless frames that change every frame, a tone: exact comparisons
    fps, sr = 8, 16000
    frames = [np.full((24, 32, 3), 10 * i, np.uint8) for i in range(24)]  # 3 s
    t = np.arange(3 * sr) / sr
    write_av(tmp_path / "a.mkv", frames, fps, (0.3 * np.sin(2 * np.pi * 300 * t))[None].astype(np.float32), sr,
             audio_codec="pcm_s16le", crf=0)
    write_av(tmp_path / "silent.mkv", frames, fps, None, crf=0)
    build_manifest(tmp_path, tmp_path / "m.jsonl", progress=False)
    return {e["path"].rsplit("/", 1)[-1]: e for e in read_manifest(tmp_path / "m.jsonl")}


def test_cached_clips_equal_decoded_clips_inside_and_at_the_edges(entries, tmp_path):
    clip = ClipConfig(video_duration=0.5, fps=8.0, size=None, crop=16, audio_duration=1.0, sample_rate=16000)
    cache = ClipCache(tmp_path / "cache", clip)
    e = entries["a.mkv"]
    for start, offset in ((1.0, 0.0), (0.25, 0.5), (2.75, 0.0), (-0.25, -0.3)):
        ours = cache.clip(e, start, offset)
        ref = decode_clip(e["path"], start, 0.5, 8.0, None, 1.0, 16000, audio_offset=offset)
        np.testing.assert_array_equal(ours.frames, ref.frames)
        np.testing.assert_allclose(ours.waveform, ref.waveform, atol=2e-4)  # the resampler's rounding at the ends
        assert (ours.video_padded_frames, ours.audio_padded_samples) == (ref.video_padded_frames,
                                                                         ref.audio_padded_samples)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and files[0].endswith(".audio.npy")  # decoded once
    mtimes = [p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()]
    cache.clip(e, 1.5)
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()] == mtimes  # reused, not rewritten


def test_a_video_without_audio_follows_missing_audio(entries, tmp_path):
    clip = ClipConfig(video_duration=0.5, fps=8.0, size=None, crop=16, audio_duration=1.0, sample_rate=16000)
    with pytest.raises(DecodeError, match="no audio stream"):
        ClipCache(tmp_path / "c1", clip).clip(entries["silent.mkv"], 1.0)
    c = ClipCache(tmp_path / "c2", clip, missing_audio="silence").clip(entries["silent.mkv"], 1.0)
    assert not c.has_audio and c.audio_padded_samples == 0 and not c.waveform.any()


def test_the_dataset_reads_through_the_cache_with_fresh_augmentation(entries, tmp_path):
    cfg = DataConfig(num_workers=0, cache=True, cache_dir=str(tmp_path / "cache"))
    cfg.clip = ClipConfig(video_duration=0.5, fps=8.0, size=24, crop=16, audio_duration=1.0, sample_rate=16000)
    ds = AVClipDataset([entries["a.mkv"]], cfg, train=True, seed=0)
    first = ds[0]
    ds.set_epoch(1)
    second = ds[0]
    assert first["video"].shape == (3, 4, 16, 16) and not torch.equal(first["video"], second["video"])
    assert len(list((tmp_path / "cache").glob("*.frames.npy"))) == 1
    with pytest.raises(ConfigError, match="cache_dir"):
        AVClipDataset([entries["a.mkv"]], DataConfig(cache=True), train=True)
    assert AVClipDataset([entries["a.mkv"]], DataConfig(cache=True), train=False).cache is None  # decodes
