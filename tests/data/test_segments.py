"""A long video as many training instances: segment rows (``avssl data manifest --segment SEC``) and segmented
shards (``avssl data shard --segment SEC``), each segment a memory-bank slot of its own, every reader drawing a
row's clips inside its segment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avssl.cli import main
from avssl.data.clips import ClipConfig
from avssl.data.collection import read_manifest, segments
from avssl.data.datasets import AVClipDataset, ClipMaker, DataConfig
from avssl.data.encode import write_av

CLIP = ClipConfig(video_duration=0.5, fps=8.0, size=32, crop=32, audio_duration=1.0, sample_rate=16000)
SMALL = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "avid_small_cpu.yaml"


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    """Two 'films' of 12 s and 6 s (small frames), whose brightness follows the time, and a 2 s clip."""
    d = tmp_path_factory.mktemp("films")
    for name, seconds in (("long", 12.0), ("mid", 6.0), ("short", 2.0)):
        n = int(seconds * 8)
        frames = [np.full((32, 40, 3), int(255 * k / n), np.uint8) for k in range(n)]
        t = np.arange(int(seconds * 16000)) / 16000
        write_av(d / f"{name}.mp4", frames, 8, (0.3 * np.sin(2 * np.pi * 300 * t))[None].astype(np.float32), 16000)
    return d


def _data() -> DataConfig:
    cfg = DataConfig(num_workers=0)
    cfg.clip = CLIP
    return cfg


def test_segments_are_equal_and_cover_the_video():
    assert segments(12.0, 4.0) == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    assert segments(11.0, 4.0) == [(0.0, 3.666667), (3.666667, 7.333333), (7.333333, 11.0)]
    assert segments(1.0, 4.0) == [(0.0, 1.0)]


def test_the_manifest_writes_a_row_per_segment_and_reads_again_incrementally(films, tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    assert main(["data", "manifest", str(films), "-o", str(out), "--segment", "4", "--quiet"]) == 0
    rows = read_manifest(out)
    by_file = {}
    for r in rows:
        by_file.setdefault(Path(r["path"]).stem, []).append((r["start"], r["end"]))
    assert by_file == {"long": [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)], "mid": [(0.0, 3.0), (3.0, 6.0)],
                       "short": [(0.0, 2.0)]}
    assert all(r["duration"] > 11 for r in rows if "long" in r["path"])  # each row keeps its file's facts
    capsys.readouterr()
    assert main(["data", "manifest", str(films), "-o", str(out), "--segment", "4", "--quiet"]) == 0
    assert "(0 new, 3 unchanged)" in capsys.readouterr().err and read_manifest(out) == rows
    assert main(["data", "manifest", str(films), "-o", str(out), "--segment", "0", "--quiet"]) == 2


def test_every_clip_of_a_segment_row_is_drawn_inside_its_segment(films, tmp_path):
    assert main(["data", "manifest", str(films), "-o", str(tmp_path / "m.jsonl"), "--segment", "4", "--quiet"]) == 0
    rows = read_manifest(tmp_path / "m.jsonl")
    train = AVClipDataset(rows, _data(), train=True, seed=0)
    lo_span = CLIP.video_duration / 2 - CLIP.audio_duration / 2  # the audio window starts this far before the frames
    for epoch in range(4):
        train.set_epoch(epoch)
        for i, r in enumerate(rows):
            start = train[i]["start"]
            assert r["start"] - 1e-6 <= start + min(0.0, lo_span), (r, start)
            assert start + CLIP.video_duration - lo_span <= r["end"] + 1e-6, (r, start)
    test = AVClipDataset(rows, _data(), train=False, clips_per_video=3)
    starts = [test[3 * i + c]["start"] for i in range(len(rows)) for c in range(3)]
    assert all(r["start"] <= s <= r["end"] for r, s in zip(np.repeat(rows, 3), starts))
    # the frames come from the segment: brightness follows the time in the film
    item = ClipMaker(_data(), train=False).item(rows[2], 0)  # long, 8-12 s
    assert item["start"] >= 8.0


def test_pretraining_on_segment_rows_gives_each_segment_a_slot_and_holds_out_whole_files(films, tmp_path):
    from avssl.config import load_config
    from avssl.train.checkpoint import load_checkpoint
    from avssl.train.online import split_holdout
    from avssl.train.pretrain import PretrainConfig, pretrain

    m = tmp_path / "m.jsonl"
    assert main(["data", "manifest", str(films), "-o", str(m), "--segment", "2", "--quiet"]) == 0
    rows = read_manifest(m)
    assert len(rows) == 6 + 3 + 1
    train, held = split_holdout(rows, 0.3, seed=0)
    assert not {r["path"] for r in train} & {r["path"] for r in held}
    cfg = load_config(PretrainConfig, SMALL, [f"data.manifest={m}", "data.num_workers=0", "optim.batch_size=5",
                                              "optim.epochs=1", "run.progress=false", "loss.num_negatives=4",
                                              "run.device=cpu", "eval.every=0", "data.cache=false"])
    pretrain(cfg, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["loss"]["memory.video"].shape[0] == 10


def test_segmented_shards_store_a_file_once_and_read_as_its_segments(films, tmp_path):
    from avssl.data.shard_writer import ShardConfig, write_shards
    from avssl.data.shards import ShardStream, load_shard_index, read_samples

    m = tmp_path / "m.jsonl"
    assert main(["data", "manifest", str(films), "-o", str(m), "--segment", "4", "--quiet"]) == 0
    for source, cfg in ((m, ShardConfig(samples_per_shard=2)), (films, ShardConfig(samples_per_shard=2, segment=4.0))):
        out = tmp_path / f"s_{source.name}"
        write_shards(source, out, cfg, progress=False)
        samples = [s for k in range(2) for s in read_samples(str(out / f"{k:06d}.tar"))]
        assert len(samples) == 3  # each file once
        index = load_shard_index(str(out / "{000000..000001}.tar"))
        assert index.samples == index.slots == 6  # 3 + 2 + 1 segments
        stream = ShardStream(index, ClipMaker(_data(), train=True), batch=2, seed=0, world=1, rank=0)
        stream.set_epoch(0)
        items = list(stream)
        assert sorted(int(it["index"]) for it in items) == list(range(6))  # every segment once, its own slot
        segs = {}
        for s in samples:
            meta = json.loads(s["json"])
            for j, (a, b) in enumerate(meta["segments"]):
                segs[meta["index"] + j] = (a, b)
        for it in items:
            a, b = segs[int(it["index"])]
            assert a - 1e-6 <= it["start"] <= b, (it["index"], it["start"], a, b)


def test_embeddings_of_segment_rows_are_per_segment(films, tmp_path):
    from avssl.embeddings import EmbedSpec, _Clips, _parts, _source

    m = tmp_path / "m.jsonl"
    assert main(["data", "manifest", str(films), "-o", str(m), "--segment", "4", "--quiet"]) == 0
    spec = EmbedSpec(window=1.0, num_workers=0)
    parts, _ = _parts(_source(str(m), tmp_path), spec, tmp_path, False)
    keys = [v.key for p in parts for v in p.videos]
    assert keys == ["long@0-4", "long@4-8", "long@8-12", "mid@0-3", "mid@3-6", "short@0-2"]
    items = list(_Clips(parts, ClipMaker(_data(), train=False), spec, _data()))
    windows = [(it["video"].key, w[1], w[2]) for it in items if "windows" in it for w in it["windows"]]
    assert ("long@4-8", 4.0, 5.0) in windows and all(k != "long@4-8" or 4.0 <= a < b <= 8.0 for k, a, b in windows)
    torch.manual_seed(0)
