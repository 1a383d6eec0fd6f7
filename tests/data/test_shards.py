"""WebDataset shards: written from a folder (in parts or at once), read as a stream split by rank and worker
with clips cut exactly as from the files, video2dataset's layout indexed and read, resumed inside an epoch."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from avssl.cli import main
from avssl.data.clips import ClipConfig
from avssl.data.collection import build_manifest, read_jsonl
from avssl.data.datasets import ClipMaker, DataConfig, av_collate
from avssl.data.decode import decode_audio, decode_clip
from avssl.data.encode import write_av
from avssl.data.shard_writer import ShardConfig, merge_shards, plan_shards, write_shards
from avssl.data.shards import ShardStream, expand_shards, load_shard_index, read_samples, slot_plan
from avssl.data.synthetic import SynthSpec, synthesize

CLIP = ClipConfig(video_duration=0.5, fps=8.0, size=32, crop=32, audio_duration=1.0, sample_rate=16000)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("shard_media")
    synthesize(d, 12, seed=2, spec=SynthSpec(width=48, height=40, fps=16, duration=2.0, sample_rate=16000))
    return d


def _data(**kw) -> DataConfig:
    cfg = DataConfig(num_workers=0, **kw)
    cfg.clip = CLIP
    return cfg


def _stream(index, rank=None, world=None, batch=3, seed=0, **kw) -> ShardStream:
    maker = ClipMaker(_data(), train=True)
    return ShardStream(index, maker, batch, seed, rank=rank, world=world, **kw)


def _indices(stream: ShardStream, epoch: int, workers: int = 0, skip: int = 0) -> list[int]:
    stream.set_epoch(epoch)
    stream.skip(skip)
    loader = DataLoader(stream, batch_size=stream.batch, num_workers=workers, collate_fn=av_collate)
    return [int(i) for b in loader for i in b["index"]]


def test_plan_by_count_and_by_size():
    assert plan_shards([5] * 7, 3, 0) == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan_shards([4, 4, 4, 9, 1], None, 8) == [[0, 1], [2], [3], [4]]
    assert expand_shards("s/{000..002}.tar t.tar") == ["s/000.tar", "s/001.tar", "s/002.tar", "t.tar"]


def test_shards_hold_the_files_and_their_index(media, tmp_path):
    res = write_shards(media, tmp_path / "shards", ShardConfig(samples_per_shard=5), progress=False)
    assert (res.planned, res.written, res.samples, res.complete) == (3, 3, 12, True)
    index = json.loads((tmp_path / "shards" / "shards.json").read_text())
    assert [s["count"] for s in index["shards"]] == [5, 5, 2] and index["slots"] == 12
    files = sorted(media.glob("*.mp4"))
    with tarfile.open(tmp_path / "shards" / "000001.tar") as tar:
        names = tar.getnames()
        assert sorted(names[:2]) == ["000000005.json", "000000005.mp4"]
        meta = json.loads(tar.extractfile("000000005.json").read())
        assert meta["index"] == 5 and meta["source"] == str(files[5]) and meta["duration"] == pytest.approx(2.0)
        assert tar.extractfile("000000005.mp4").read() == files[5].read_bytes()  # the file's own bytes
    again = write_shards(media, tmp_path / "shards", ShardConfig(samples_per_shard=5), progress=False)
    assert (again.written, again.kept) == (0, 3)  # a rerun resumes: nothing to do
    with pytest.raises(ValueError, match="another plan"):
        write_shards(media, tmp_path / "shards", ShardConfig(samples_per_shard=4), progress=False)


def test_a_job_array_and_a_merge_give_the_same_shards_and_manifest(media, tmp_path):
    cfg = ShardConfig(samples_per_shard=3)
    write_shards(media, tmp_path / "one", cfg, progress=False)
    for i in range(3):
        res = write_shards(media, tmp_path / "parts", cfg, part=(i, 3), progress=False)
        assert res.complete == (i == 2)  # the last part finds every shard written
    (tmp_path / "parts" / "shards.json").unlink()
    write_shards(media, tmp_path / "half", cfg, part=(0, 2), progress=False)
    with pytest.raises(ValueError, match="2 of 4 planned shards are not written yet"):
        merge_shards(tmp_path / "half")
    assert main(["data", "merge", str(tmp_path / "parts")]) == 0
    for name in ["000000.tar", "000001.tar", "000002.tar", "000003.tar", "shards.json"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes(), name
    build_manifest(media, tmp_path / "m.jsonl", progress=False)
    for i in range(4):
        assert main(["data", "manifest", str(media), "-o", str(tmp_path / f"m{i}.jsonl"), "--part", f"{i}/4",
                     "--quiet"]) == 0
    assert main(["data", "merge", *[str(tmp_path / f"m{i}.jsonl") for i in (2, 0, 3, 1)], "-o",
                 str(tmp_path / "merged.jsonl")]) == 0
    strip = [{k: v for k, v in r.items() if k != "mtime"} for r in read_jsonl(tmp_path / "m.jsonl")]
    assert [{k: v for k, v in r.items() if k != "mtime"} for r in read_jsonl(tmp_path / "merged.jsonl")] == strip
    with pytest.raises(SystemExit, match="parts 1 of 4 are missing|missing"):
        main(["data", "merge", str(tmp_path / "m0.jsonl"), "-o", str(tmp_path / "x.jsonl")])


def test_clips_from_shards_equal_clips_from_the_files(media, tmp_path):
    write_shards(media, tmp_path / "s", ShardConfig(samples_per_shard=4), progress=False)
    index = load_shard_index(str(tmp_path / "s" / "{000000..000002}.tar"))
    stream = _stream(index, batch=1)
    sources = {int(r["index"]): r["path"] for r in read_manifest_rows(media)}
    for raw in itertools.islice(stream._raw([1]), 4):
        entry, i = stream.entry(raw)
        assert i == 4 + raw.position
        for start in (0.0, 0.75, 1.5):
            ours = decode_clip(entry["path"], start, 0.5, 8.0, 32, 1.0, 16000)
            ref = decode_clip(sources[i], start, 0.5, 8.0, 32, 1.0, 16000)
            np.testing.assert_array_equal(ours.frames, ref.frames)
            np.testing.assert_array_equal(ours.waveform, ref.waveform)


def read_manifest_rows(media: Path) -> list[dict]:
    return [{"index": i, "path": str(p)} for i, p in enumerate(sorted(media.glob("*.mp4")))]


@pytest.mark.parametrize("workers", [0, 2])
def test_one_epoch_over_two_processes_sees_every_sample_once(media, tmp_path, workers):
    write_shards(media, tmp_path / "s", ShardConfig(samples_per_shard=3), progress=False)  # 4 shards of 3
    index = load_shard_index(str(tmp_path / "s" / "{000000..000003}.tar"))
    for epoch in (0, 1):
        seen = [_indices(_stream(index, rank=r, world=2, batch=3), epoch, workers) for r in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == 6  # the same steps on every process
        assert sorted(seen[0] + seen[1]) == list(range(12))
    plans = [slot_plan(index, 0, e, 2) for e in (0, 1, 2)]
    assert len({json.dumps(p) for p in plans}) > 1  # the shards move between processes from epoch to epoch


def test_a_stream_resumed_inside_an_epoch_sees_the_rest_of_it(media, tmp_path):
    write_shards(media, tmp_path / "s", ShardConfig(samples_per_shard=3), progress=False)
    index = load_shard_index(str(tmp_path / "s" / "{000000..000003}.tar"))
    stream = _stream(index, batch=2, shuffle_buffer=4)
    full = _indices(stream, 1)
    assert sorted(full) == list(range(12)) and full != sorted(full)  # shuffled across shards
    assert _indices(stream, 1, skip=2) == full[4:]
    loader = DataLoader(stream, batch_size=2, num_workers=0, collate_fn=av_collate)
    stream.set_epoch(1)
    first = [b["video"] for b in loader]
    stream.set_epoch(1)
    stream.skip(5)
    torch.testing.assert_close([b["video"] for b in loader], first[5:])  # the same clips, bit for bit


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_video2dataset_layout_with_separate_audio_is_indexed_and_read(media, tmp_path):
    """video2dataset writes NNNNN.tar with KEY.mp4, KEY.json, KEY.txt (and KEY.m4a when it keeps the audio
    apart); the index pass numbers the samples and keeps avssl-index.json beside the shards."""
    files = sorted(media.glob("*.mp4"))
    t = np.arange(32000) / 16000
    write_av(tmp_path / "silent.mp4", [np.full((40, 48, 3), 7 * i, np.uint8) for i in range(32)], 16)
    write_av(tmp_path / "tone.m4a", None, 16, (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), 16000)
    v2d = tmp_path / "v2d"
    v2d.mkdir()
    meta = json.dumps({"url": "https://example.org/x", "key": "000000001", "status": "success"}).encode()
    _tar(v2d / "00000.tar", [("000000000.mp4", files[0].read_bytes()), ("000000000.json", meta),
                             ("000000000.txt", b"a caption"), ("000000001.mp4", (tmp_path / "silent.mp4").read_bytes()),
                             ("000000001.m4a", (tmp_path / "tone.m4a").read_bytes()), ("000000001.json", meta)])
    _tar(v2d / "00001.tar", [("000010000.mp4", files[1].read_bytes()), ("000010000.txt", b"no json")])
    index = load_shard_index(str(v2d / "{00000..00001}.tar"))
    assert [s["count"] for s in index.shards] == [2, 1] and index.indices == "position"
    assert (v2d / "avssl-index.json").exists()
    stream = _stream(index, batch=1)
    raws = list(itertools.islice(stream._raw([0]), 2))
    entry, i = stream.entry(raws[1])
    assert i == 1 and "audio_path" in entry and entry["duration"] == pytest.approx(2.0, abs=0.1)
    clip = stream.maker.decode(entry, stream.maker.clip_spec(entry["duration"], 0, torch.Generator()))
    ref = decode_audio(tmp_path / "tone.m4a", clip.audio_start, 1.0, 16000).waveform
    np.testing.assert_array_equal(clip.waveform, ref)
    assert sorted(_indices(stream, 0)) == [0, 1, 2]


def test_broken_samples_are_skipped_and_reported(media, tmp_path):
    files = sorted(media.glob("*.mp4"))
    shards = tmp_path / "s"
    shards.mkdir()
    _tar(shards / "a.tar", [("k0.mp4", files[0].read_bytes()), ("k1.mp4", files[1].read_bytes()[:3000]),
                            ("k2.json", b"{}"), ("k3.mp4", files[3].read_bytes())])
    stream = _stream(load_shard_index(str(shards / "a.tar")), batch=1)
    stream.set_epoch(0)
    items = list(stream)  # the epoch's 4 samples: the 2 good ones, then again (the slot is short of its quota)
    reasons = [f["reason"] for item in items for f in item["failures"]]
    assert [i["index"] for i in items] in ([0, 3, 0, 3], [3, 0, 3, 0], [0, 3, 3, 0], [3, 0, 0, 3])
    assert any("no video" in r for r in reasons) and any("cannot open as media" in r for r in reasons)
    assert all(f["path"].startswith(str(shards / "a.tar") + ":k") for item in items for f in item["failures"])


@pytest.mark.parametrize("layout", ["avssl", "video2dataset"])
def test_pretraining_from_shards_trains_and_resumes(media, tmp_path, layout):
    from avssl.config import load_config
    from avssl.train.checkpoint import load_checkpoint
    from avssl.train.pretrain import PretrainConfig, pretrain

    if layout == "avssl":
        write_shards(media, tmp_path / "s", ShardConfig(samples_per_shard=3), progress=False)
        shards = str(tmp_path / "s" / "{000000..000003}.tar")
    else:  # as video2dataset writes them: 00000.tar, KEY.mp4 + KEY.json + KEY.txt, no avssl index
        (tmp_path / "s").mkdir()
        files = sorted(media.glob("*.mp4"))
        for k in range(4):
            _tar(tmp_path / "s" / f"{k:05d}.tar", [
                (f"{k:05d}{i:04d}{ext}", data) for i, f in enumerate(files[3 * k : 3 * k + 3])
                for ext, data in ((".mp4", f.read_bytes()), (".json", b'{"status": "success"}'), (".txt", b"-"))])
        shards = str(tmp_path / "s" / "{00000..00003}.tar")
    small = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "avid_small_cpu.yaml"
    over = [f"data.shards={shards}", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=2",
            "run.progress=false", "run.log_every=1", "loss.num_negatives=8", "run.device=cpu"]
    full = pretrain(load_config(PretrainConfig, small, [*over, "run.max_steps=5"]), tmp_path / "full")
    pretrain(load_config(PretrainConfig, small, [*over, "run.max_steps=4"]), tmp_path / "resumed")
    resumed = pretrain(load_config(PretrainConfig, small, [*over, "run.max_steps=5"]), tmp_path / "resumed")
    assert full["steps"] == resumed["steps"] == 5 and full["final_loss"] == resumed["final_loss"]
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "resumed"))
    assert a["loss"]["memory.video"].shape[0] == 12
    for name, t in a["model"].items():
        torch.testing.assert_close(t, b["model"][name], rtol=0, atol=0, msg=name)


def test_shards_are_read_from_pipes_and_fsspec_urls(media, tmp_path):
    write_shards(media, tmp_path / "s", ShardConfig(samples_per_shard=6), progress=False)
    local = tmp_path / "s" / "000001.tar"
    want = [s["__key__"] for s in read_samples(str(local))]
    assert want == [f"{i:09d}" for i in range(6, 12)]
    assert [s["__key__"] for s in read_samples(f"pipe:cat {local}")] == want
    assert [s["__key__"] for s in read_samples(f"file://{local}")] == want
    import fsspec

    with fsspec.open("memory://bucket/000001.tar", "wb") as f:  # an object store, as fsspec sees one
        f.write(local.read_bytes())
    assert [s["__key__"] for s in read_samples("memory://bucket/000001.tar")] == want
    index = load_shard_index("memory://bucket/000001.tar", fallback_dir=tmp_path / "run")
    assert index.samples == 6 and (tmp_path / "run" / "avssl-index.json").exists()


def _gloo_epoch(rank: int, world: int, init: str, shards: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        stream = _stream(load_shard_index(shards), batch=3)  # rank and world from the process group
        seen = _indices(stream, 0, workers=1)
        parts: list = [None] * world
        dist.all_gather_object(parts, seen)
        if rank == 0:
            Path(out).write_text(json.dumps(parts))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_one_epoch_over_two_gloo_processes_sees_every_sample_once(media, tmp_path):
    import torch.multiprocessing as mp

    write_shards(media, tmp_path / "s", ShardConfig(samples_per_shard=3), progress=False)
    shards = str(tmp_path / "s" / "{000000..000003}.tar")
    load_shard_index(shards)
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.start_processes(_gloo_epoch, args=(2, init, shards, str(tmp_path / "seen.json")), nprocs=2, join=True,
                       start_method="spawn")
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert len(seen[0]) == len(seen[1]) == 6 and sorted(seen[0] + seen[1]) == list(range(12))
