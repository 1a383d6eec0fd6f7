"""Decode once: clips cut from the cache equal clips decoded from the file (inside, at the edges, past the end
off the grid), entries follow the file on disk, torn entries are rebuilt, failures are remembered, killed
builders leave nothing behind, and the plan says which videos the cache pays for."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch

from avssl.config import ConfigError
from avssl.data import cache as cache_mod
from avssl.data.cache import ClipCache, entry_sizes, plan_cache
from avssl.data.clips import ClipConfig
from avssl.data.collection import build_manifest, read_manifest
from avssl.data.datasets import AVClipDataset, DataConfig
from avssl.data.decode import DecodeError, decode_clip
from avssl.data.encode import write_av

CLIP = ClipConfig(video_duration=0.5, fps=8.0, size=None, crop=16, audio_duration=1.0, sample_rate=16000)


def _frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """Frames that differ from each other everywhere (a pattern that moves every frame)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def _tone(seconds: float, hz: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * hz * t))[None].astype(np.float32)


@pytest.fixture
def entries(tmp_path):
    # 3 s: "a" at 8 fps (on the cache's grid), "off" at 30 fps (its last frame, 2.967 s, lies between grid times)
    write_av(tmp_path / "a.mkv", _frames(24), 8, _tone(3, 300), 16000, audio_codec="pcm_s16le", crf=0)
    write_av(tmp_path / "off.mkv", _frames(90), 30, _tone(3, 500), 16000, audio_codec="pcm_s16le", crf=0)
    write_av(tmp_path / "silent.mkv", _frames(24), 8, None, crf=0)
    build_manifest(tmp_path, tmp_path / "m.jsonl", progress=False)
    return {e["path"].rsplit("/", 1)[-1]: e for e in read_manifest(tmp_path / "m.jsonl")}


def _same_as_decoder(cache: ClipCache, e: dict, start: float, offset: float = 0.0) -> None:
    ours = cache.clip(e, start, offset)
    ref = decode_clip(e["path"], start, CLIP.video_duration, CLIP.fps, None, CLIP.audio_duration, 16000,
                      audio_offset=offset)
    np.testing.assert_array_equal(ours.frames, ref.frames, err_msg=f"frames at {start}")
    np.testing.assert_allclose(ours.waveform, ref.waveform, atol=2e-4)  # the resampler's rounding at the ends
    assert (ours.video_padded_frames, ours.audio_padded_samples) == (ref.video_padded_frames,
                                                                     ref.audio_padded_samples), start


@pytest.mark.parametrize("name", ["a.mkv", "off.mkv"])
def test_cached_clips_equal_decoded_clips_inside_at_the_edges_and_past_the_end(entries, tmp_path, name):
    cache = ClipCache(tmp_path / "cache", CLIP)
    for start, offset in ((1.0, 0.0), (0.25, 0.5), (2.75, 0.0), (-0.25, -0.3), (3.0, 0.0), (4.5, 0.0)):
        _same_as_decoder(cache, entries[name], start, offset)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 3 and [f.rsplit(".", 2)[-2:] for f in files][:2] == [["audio", "npy"], ["frames", "npy"]]
    mtimes = [p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()]
    ClipCache(tmp_path / "cache", CLIP).clip(entries[name], 1.5)  # another process, the next epoch
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()] == mtimes  # reused, not rewritten


def test_a_video_without_audio_follows_missing_audio(entries, tmp_path):
    with pytest.raises(DecodeError, match="no audio stream"):
        ClipCache(tmp_path / "c1", CLIP).clip(entries["silent.mkv"], 1.0)
    c = ClipCache(tmp_path / "c2", CLIP, missing_audio="silence").clip(entries["silent.mkv"], 1.0)
    assert not c.has_audio and c.audio_padded_samples == 0 and not c.waveform.any()


@pytest.mark.parametrize("recorded", [True, False])  # the manifest's size and mtime, or a hand-written entry
def test_a_file_replaced_under_the_same_manifest_is_decoded_again(entries, tmp_path, recorded):
    e = dict(entries["a.mkv"])
    if not recorded:
        e = {"path": e["path"], "duration": e["duration"], "audio": True}
    cache = ClipCache(tmp_path / "cache", CLIP)
    before = cache.clip(e, 1.0).frames
    stat = os.stat(e["path"])
    write_av(e["path"], _frames(24, seed=7), 8, _tone(3, 700), 16000, audio_codec="pcm_s16le", crf=0)
    os.utime(e["path"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    for c in (cache, ClipCache(tmp_path / "cache", CLIP)):  # the same process, and a later one
        after = c.clip(e, 1.0)
        assert not np.array_equal(after.frames, before)
        np.testing.assert_array_equal(after.frames, decode_clip(e["path"], 1.0, 0.5, 8.0, None, 1.0).frames)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1  # the old version's entry is gone


@pytest.mark.parametrize("which", ["frames", "audio", "json"])
def test_a_torn_entry_is_rebuilt(entries, tmp_path, which):
    e = entries["off.mkv"]
    ClipCache(tmp_path / "cache", CLIP).clip(e, 1.0)
    (torn,) = (tmp_path / "cache").glob(f"*.{which}*")
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])  # a crash before the data reached the disk
    _same_as_decoder(ClipCache(tmp_path / "cache", CLIP), e, 1.0)
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_a_failed_audio_decode_is_remembered_not_retried(entries, tmp_path, monkeypatch):
    calls = {"frames": 0, "audio": 0}
    real_frames = cache_mod.iter_frames

    def frames(*args, **kwargs):
        calls["frames"] += 1
        return real_frames(*args, **kwargs)

    def audio(path, *args, **kwargs):
        calls["audio"] += 1
        raise DecodeError(path, "decoding audio failed near 0.000s: Invalid data found")

    monkeypatch.setattr(cache_mod, "iter_frames", frames)
    monkeypatch.setattr(cache_mod, "decode_audio", audio)
    for _ in range(3):  # three epochs, each in a new loader worker
        with pytest.raises(DecodeError, match="Invalid data found"):
            ClipCache(tmp_path / "cache", CLIP).clip(entries["a.mkv"], 1.0)
    assert calls == {"frames": 1, "audio": 1}


def test_a_video_that_fails_to_decode_is_remembered(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 5000)
    e = {"path": str(bad), "duration": 2.0, "audio": True}
    for _ in range(2):
        with pytest.raises(DecodeError, match="cannot open as media"):
            ClipCache(tmp_path / "cache", CLIP).clip(e, 0.5)
    (record,) = (tmp_path / "cache").glob("*.json")
    assert "cannot open" in json.loads(record.read_text())["error"]


def test_temporary_files_of_killed_builders_are_removed(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = cache_mod._HOST
    left = folder / f".k-1.frames.npy.{host}.{dead.pid}.tmp"  # what a builder killed by SIGKILL leaves
    live = folder / f".k-2.frames.npy.{host}.{os.getpid()}.tmp"  # another worker building right now
    left.write_bytes(b"partial")
    live.write_bytes(b"partial")
    ClipCache(folder, CLIP)
    assert not left.exists() and live.exists()
    # names written now carry the pid's start time: a live pid that belongs to another process (a reused pid, another
    # PID namespace) does not keep a dead builder's file, and this process's own file stays
    me = cache_mod._tmp_name(folder / "k-3.frames.npy")
    other = folder / f".k-4.frames.npy.{host}.{os.getpid()}-1-abcd.tmp"  # this pid, but started at another time
    me.write_bytes(b"partial")
    other.write_bytes(b"partial")
    ClipCache(folder, CLIP)
    assert me.exists() and not other.exists()


def test_the_plan_caches_what_pays_and_stops_when_too_big(entries, tmp_path):
    rows = [entries["a.mkv"], dict(entries["off.mkv"], duration=600.0)]  # a clip and a 10-minute film
    sizes = entry_sizes(rows, CLIP)
    assert sizes[0] == 25 * 24 * 32 * 3 + 4 * 48000  # 24 grid frames and the last one, 3 s of float32 audio
    durations = np.array([r["duration"] for r in rows])
    plan = plan_cache(durations, sizes, CLIP, "auto", tmp_path / "c", None, epochs=60, clips_per_video=1)
    assert plan.cached.tolist() == [True, False] and "1 of 2 videos" in plan.message and "600" not in plan.message
    assert "longer than 210 s" in plan.message  # 60 x (2.5 s to the clip + its 1 s span)
    assert plan_cache(durations, sizes, CLIP, True, tmp_path / "c", None, 60, 1).cached.all()
    with pytest.raises(ConfigError, match="cache_max_gb"):
        plan_cache(durations, sizes, CLIP, True, tmp_path / "c", 1e-6, 60, 1)
    off = plan_cache(durations, sizes, CLIP, "auto", tmp_path / "c", 1e-6, 60, 1)
    assert not off.enabled and off.message.startswith("cache: off")
    assert not plan_cache(durations, sizes, CLIP, False, tmp_path / "c", None, 60, 1).enabled


def test_size_estimate_matches_the_stored_files(entries, tmp_path):
    clip = ClipConfig(video_duration=0.5, fps=8.0, size=16, crop=16, audio_duration=1.0, sample_rate=16000)
    e = entries["off.mkv"]
    ClipCache(tmp_path / "cache", clip).clip(e, 1.0)
    stored = sum(p.stat().st_size for p in (tmp_path / "cache").glob("*.npy"))
    assert abs(stored - int(entry_sizes([e], clip)[0])) <= 2 * 128  # the two .npy headers


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
    # the plan's mask: the first video is read from its file
    cfg.cache_dir = str(tmp_path / "c2")
    both = AVClipDataset([entries["a.mkv"], entries["off.mkv"]], cfg, train=True, seed=0,
                         cached=np.array([False, True]))
    assert both[0]["video"].shape == both[1]["video"].shape
    (stored,) = (tmp_path / "c2").glob("*.json")
    assert json.loads(stored.read_text())["source"] == entries["off.mkv"]["path"]


def test_the_disk_check_counts_this_plans_files_once_each(entries, tmp_path, monkeypatch):
    """A manifest that lists a file 24 times is sized once per file; another clip spec's files in the same folder
    are not counted as already there (a 30 GB cache was accepted with 5 GB free)."""
    import shutil
    from collections import namedtuple

    e = entries["a.mkv"]
    rows = [e] * 24
    sizes = entry_sizes(rows, CLIP)
    durations = np.array([r["duration"] for r in rows])
    plan = plan_cache(durations, sizes, CLIP, True, tmp_path / "c", None, 60, 1, paths=[r["path"] for r in rows])
    assert plan.bytes_total == sizes[0] and "1 file (24 manifest rows)" in plan.message
    other = ClipConfig(video_duration=0.5, fps=4.0, size=16, crop=16, audio_duration=1.0, sample_rate=16000)
    ClipCache(tmp_path / "c", other).clip(e, 1.0)  # another spec's entry of the same file, in the same folder
    assert any((tmp_path / "c").glob("*.npy"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 0, int(sizes[0]) // 2))
    with pytest.raises(ConfigError, match="free disk"):
        plan_cache(durations, sizes, CLIP, True, tmp_path / "c", None, 60, 1, paths=[r["path"] for r in rows])
    ClipCache(tmp_path / "c", CLIP).clip(e, 1.0)  # this spec's own entry, now stored: nothing more needed
    again = plan_cache(durations, sizes, CLIP, True, tmp_path / "c", None, 60, 1, paths=[r["path"] for r in rows])
    assert again.bytes_present >= again.bytes_total


@pytest.mark.parametrize("workers", [0, 1])
def test_a_full_disk_while_caching_ends_with_one_line(entries, tmp_path, monkeypatch, capsys, workers):
    import errno
    from pathlib import Path

    from avssl.cli import main

    def full(f, shape, dtype):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_npy_header", full)
    build_manifest(tmp_path, tmp_path / "m2.jsonl", progress=False, require_audio=True)
    small = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "avid_small_cpu.yaml"
    argv = ["pretrain", "--config", str(small), "--output-dir", str(tmp_path / "run")]
    for o in (f"data.manifest={tmp_path / 'm2.jsonl'}", "data.cache=true", f"data.num_workers={workers}",
              "optim.batch_size=2", "run.progress=false", "run.device=cpu", "eval.every=0"):
        argv += ["--set", o]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("avssl: data.cache: no space left in") and "Traceback" not in err[0]
