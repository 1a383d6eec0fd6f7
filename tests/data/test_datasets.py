from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from avssl.data.clips import ClipConfig
from avssl.data.collection import build_manifest, read_manifest
from avssl.data.datasets import AVClipDataset, DataConfig, av_collate
from avssl.data.decode import DecodeError


def _cfg(**kw) -> DataConfig:
    cfg = DataConfig(clip=ClipConfig(video_duration=0.25, fps=16, size=48, crop=40, audio_duration=1.0))
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture
def manifest(tmp_path, synth_dir):
    out = tmp_path / "m.jsonl"
    build_manifest(synth_dir, out, progress=False)
    return out


def test_items_have_the_documented_shapes(manifest):
    ds = AVClipDataset(manifest, _cfg(), train=True)
    item = ds[1]
    assert item["video"].shape == (3, 4, 40, 40) and item["video"].dtype == torch.float32
    assert item["audio"].shape == (1, 80, 101) and item["audio"].dtype == torch.float32
    assert item["index"] == 1 and item["path"].endswith("clip_00001.mp4") and item["failures"] == []
    assert 0 <= item["start"] <= 2.0 - 0.25


def test_eval_gives_uniform_clips_per_video(manifest):
    ds = AVClipDataset(manifest, _cfg(), train=False, clips_per_video=3)
    assert len(ds) == 18
    starts = [ds[i]["start"] for i in range(3)]
    assert starts == sorted(starts) and len(set(starts)) == 3
    assert ds[4]["index"] == 1 and ds[4]["clip"] == 1
    assert torch.equal(ds[0]["video"], ds[0]["video"])  # deterministic


@pytest.fixture
def broken_manifest(tmp_path, manifest):
    rows = read_manifest(manifest)
    bad = tmp_path / "broken.mp4"
    shutil.copy(rows[0]["path"], bad)
    bad.write_bytes(bad.read_bytes()[:3000])  # truncated after the manifest was made
    rows[0] = dict(rows[0], path=str(bad))
    return rows


def test_skip_policy_loads_another_clip_and_records_the_failure(broken_manifest):
    ds = AVClipDataset(broken_manifest, _cfg(), train=True)
    torch.manual_seed(0)
    item = ds[0]
    assert item["index"] != 0 and item["failures"][0]["path"].endswith("broken.mp4")
    assert item["failures"][0]["reason"]
    batch = av_collate([ds[0], ds[1]])
    assert batch["video"].shape[0] == 2 and len(batch["failures"]) >= 1


def test_raise_policy_raises(broken_manifest):
    ds = AVClipDataset(broken_manifest, _cfg(on_error="raise"), train=True)
    with pytest.raises(DecodeError, match="broken.mp4"):
        ds[0]


def test_gives_up_after_max_retries(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(os.urandom(100))
    rows = [{"path": str(bad), "duration": 2.0}]
    ds = AVClipDataset(rows, _cfg(max_retries=3), train=True)
    with pytest.raises(DecodeError, match="4 consecutive clips failed"):
        ds[0]


def test_failures_reach_the_main_process_through_workers(broken_manifest):
    ds = AVClipDataset(broken_manifest, _cfg(), train=True)
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=av_collate)
    failures = [f for b in loader for f in b["failures"]]
    assert any(f["path"].endswith("broken.mp4") for f in failures)


def test_sample_rate_mismatch_is_a_clear_error(manifest):
    cfg = _cfg()
    cfg.spectrogram.sample_rate = 24000
    with pytest.raises(ValueError, match="spectrogram.sample_rate"):
        AVClipDataset(manifest, cfg, train=True)


def test_seeded_items_depend_only_on_seed_epoch_and_index(manifest):
    a = AVClipDataset(manifest, _cfg(), train=True, seed=5)
    b = AVClipDataset(manifest, _cfg(), train=True, seed=5)
    torch.manual_seed(123)  # the global RNG does not matter
    x = a[2]
    torch.manual_seed(999)
    y = b[2]
    assert torch.equal(x["video"], y["video"]) and x["start"] == y["start"]
    b.set_epoch(1)
    assert b[2]["start"] != x["start"]


def test_workers_forked_after_decoding_in_the_parent_do_not_hang(manifest):
    ds = AVClipDataset(manifest, _cfg(), train=True, seed=0)
    ds[0]  # the parent decodes (and scales) first, then forks workers
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=av_collate)
    assert sum(len(b["index"]) for b in loader) == len(ds)


def test_deferred_items_finished_per_batch_equal_per_item_preprocessing(manifest):
    from avssl.data.datasets import BatchPreprocess
    from avssl.data.transforms import AudioAugConfig, VideoAugConfig

    cfg = _cfg(video_aug=VideoAugConfig(jitter_prob=0.6), audio_aug=AudioAugConfig(time_masks=1, freq_masks=1))
    ready = AVClipDataset(manifest, cfg, train=True, seed=5)
    deferred = AVClipDataset(manifest, cfg, train=True, seed=5, defer=True)
    idx = [0, 3, 4, 5]
    a = av_collate([ready[i] for i in idx])
    b = av_collate([deferred[i] for i in idx])
    assert b["video"].dtype == torch.uint8 and b["waveform"].shape == (4, 16000)
    video, audio = BatchPreprocess(cfg, train=True)(b, torch.device("cpu"))
    torch.testing.assert_close(video, a["video"], atol=1e-5, rtol=0)
    torch.testing.assert_close(audio, a["audio"], atol=1e-4, rtol=0)
