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
    for name in ["000000.tar", "000001.tar", "000002.tar", "000003.tar"]:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes(), name

    def unstamped(d: Path) -> list[dict]:  # the files' sizes agree; their modification times are the runs' own
        return [{k: v for k, v in sh.items() if k != "mtime_ns"}
                for sh in json.loads((d / "shards.json").read_text())["shards"]]

    assert unstamped(tmp_path / "one") == unstamped(tmp_path / "parts")
    build_manifest(media, tmp_path / "m.jsonl", progress=False)
    for i in range(4):
        assert main(["data", "manifest", str(media), "-o", str(tmp_path / f"m{i}.jsonl"), "--part", f"{i}/4",
                     "--quiet"]) == 0
    assert main(["data", "merge", *[str(tmp_path / f"m{i}.jsonl") for i in (2, 0, 3, 1)], "-o",
                 str(tmp_path / "merged.jsonl")]) == 0
    strip = [{k: v for k, v in r.items() if k != "mtime"} for r in read_jsonl(tmp_path / "m.jsonl")]
    assert [{k: v for k, v in r.items() if k != "mtime"} for r in read_jsonl(tmp_path / "merged.jsonl")] == strip
    assert main(["data", "merge", str(tmp_path / "m0.jsonl"), "-o", str(tmp_path / "x.jsonl")]) == 2


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


# ------------------------------------------------------------------------------------ real collections (issue 31)

def _write(media: Path, out: Path, per: int = 3) -> Path:
    write_shards(media, out, ShardConfig(samples_per_shard=per), progress=False)
    return out


def test_a_truncated_shard_is_recorded_and_its_slot_fills_its_quota_from_its_other_shards(media, tmp_path):
    s = _write(media, tmp_path / "s")
    whole = (s / "000001.tar").read_bytes()
    (s / "000001.tar").write_bytes(whole[: len(whole) // 2])  # cut inside its second sample
    merge_shards(s)  # an index that lists it as it is now (a download cut short before the index was made)
    index = load_shard_index(str(s / "{000000..000003}.tar"))
    stream = _stream(index, batch=3)
    stream.set_epoch(0)
    items = list(stream)
    assert len(items) == 12  # the epoch's quota, filled from the readable samples
    failures = [f for it in items for f in it["failures"]]
    assert any(f["path"].endswith("000001.tar") and "unreadable shard (after 1 samples)" in f["reason"]
               for f in failures)
    strict = _stream(index, batch=3, on_error="raise")
    strict.set_epoch(0)
    with pytest.raises(tarfile.ReadError):
        list(strict)


def test_empty_shards_are_not_dealt_and_a_stream_of_nothing_ends_with_one_line(media, tmp_path):
    from avssl.data.shards import ShardIndex

    files = sorted(media.glob("*.mp4"))
    s = tmp_path / "v2d"
    s.mkdir()
    _tar(s / "full.tar", [(f"k{i}.mp4", files[i].read_bytes()) for i in range(3)])
    _tar(s / "empty.tar", [])  # what `avssl data shard` writes when every file of a shard is rejected
    index = load_shard_index([str(s / "full.tar"), str(s / "empty.tar")])
    assert [sh["count"] for sh in index.shards] == [3, 0]
    plan = slot_plan(index, 0, 0, 2)
    assert sorted(map(len, plan)) == [0, 1] and 1 not in [k for p in plan for k in p]
    # a slot whose shards yield nothing reads the epoch's others; where none yields anything, one line, no loop
    broken = ShardIndex([{"url": str(s / "empty.tar"), "count": 2, "first_index": 0}], "position", 2)
    stream = _stream(broken, batch=1)
    stream.set_epoch(0)
    with pytest.raises(RuntimeError, match="no shard of the collection yielded a readable sample"):
        list(stream)


def test_fewer_shards_than_slots_cap_the_workers_or_stop_with_one_line(media, tmp_path):
    from avssl.data.shards import usable_workers

    index = load_shard_index(str(_write(media, tmp_path / "s", per=4) / "{000000..000002}.tar"))  # 3 shards
    assert usable_workers(index, world=1, workers=10) == 3
    assert usable_workers(index, world=2, workers=2) == 1 and usable_workers(index, world=3, workers=0) == 0
    with pytest.raises(ValueError, match="3 non-empty shard\\(s\\) for 4 processes"):
        usable_workers(index, world=4, workers=1)


@pytest.mark.parametrize("workers, skip", [(2, 3), (3, 1), (2, 1)])
def test_a_stream_resumed_with_loader_workers_goes_on_in_the_same_order(media, tmp_path, workers, skip):
    """The DataLoader of a resumed epoch asks its worker 0 first; the workers' roles rotate by the batches
    skipped, so the batches after the resume are those of the uninterrupted epoch, in order."""
    index = load_shard_index(str(_write(media, tmp_path / "s", per=2) / "{000000..000005}.tar"))
    stream = _stream(index, batch=2, shuffle_buffer=3)
    full = _indices(stream, 1, workers=workers)
    assert sorted(full) == list(range(12))
    assert _indices(stream, 1, workers=workers, skip=skip) == full[2 * skip:]


def test_bad_memory_bank_indices_in_shards_are_failed_samples(media, tmp_path):
    from avssl.data.shards import ShardIndex

    files = sorted(media.glob("*.mp4"))
    s = tmp_path / "s"
    s.mkdir()
    bad = [("a", b'{"index": -1}'), ("b", b'{"index": 1000000}'), ("c", b'[1, 2]'), ("d", b'{"index": "2"}'),
           ("e", b'{"index": 3}')]
    _tar(s / "x.tar", [m for k, meta in bad for m in ((f"{k}.mp4", files[0].read_bytes()), (f"{k}.json", meta))])
    stream = _stream(ShardIndex([{"url": str(s / "x.tar"), "count": 5, "first_index": 0}], "json", 5), batch=1)
    reasons = []
    for raw in stream._raw([0]):
        try:
            stream.entry(raw)
        except Exception as e:  # every bad one a DecodeError (skipped and recorded), nothing else
            assert type(e).__name__ == "DecodeError", e
            reasons.append(e.reason)
    assert len(reasons) == 4
    assert "outside the bank's 5 slots" in reasons[0] and "outside" in reasons[1]
    assert "not a JSON object" in reasons[2] and "not an integer" in reasons[3]


def test_an_index_knows_its_shards_and_is_made_again_when_one_changes(media, tmp_path, caplog):
    files = sorted(media.glob("*.mp4"))
    v2d = tmp_path / "v2d"
    v2d.mkdir()
    _tar(v2d / "0.tar", [(f"k{i}.mp4", files[i].read_bytes()) for i in range(3)])
    _tar(v2d / "1.tar", [(f"k{i}.mp4", files[i].read_bytes()) for i in range(3, 5)])
    spec = str(v2d / "{0..1}.tar")
    assert load_shard_index(spec).samples == 5
    _tar(v2d / "1.tar", [(f"k{i}.mp4", files[i].read_bytes()) for i in range(3, 7)])  # rewritten: 4 samples
    index = load_shard_index(spec)
    assert index.samples == 7 and "changed since" in caplog.text  # indexed again, not indices past the bank
    s = _write(media, tmp_path / "s")
    (s / "000002.tar").write_bytes((s / "000002.tar").read_bytes() + b"\0" * 1024)  # shards.json's shard changed
    with pytest.raises(ValueError, match="000002.tar changed since .*shards.json"):
        load_shard_index(str(s / "{000000..000003}.tar"))


def test_a_relative_collection_reads_again_from_another_directory(media, tmp_path, monkeypatch):
    files = sorted(media.glob("*.mp4"))
    (tmp_path / "work" / "v2d").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    for k in range(2):
        _tar(tmp_path / "work" / "v2d" / f"{k}.tar", [(f"k{k}{i}.mp4", files[2 * k + i].read_bytes()) for i in (0, 1)])
    monkeypatch.chdir(tmp_path / "work")
    first = load_shard_index("v2d/{0..1}.tar")  # the index pass, run with a relative path
    stored = json.loads((tmp_path / "work" / "v2d" / "avssl-index.json").read_text())
    assert [s["url"] for s in stored["shards"]] == ["0.tar", "1.tar"]  # relative to the index's folder
    again = load_shard_index("v2d/{0..1}.tar")  # a later run, a resume
    monkeypatch.chdir(tmp_path / "elsewhere")
    other = load_shard_index("../work/v2d/{0..1}.tar")
    assert first.samples == again.samples == other.samples == 4
    assert [s["url"] for s in other.shards] == [str(tmp_path / "work" / "v2d" / f"{k}.tar") for k in (0, 1)]


def test_shards_from_a_manifest_apply_the_same_filters_and_record_them(media, tmp_path):
    from avssl.data.collection import write_jsonl

    silent = tmp_path / "silent.mp4"
    write_av(silent, [np.full((40, 48, 3), 9, np.uint8)] * 32, 16)
    short = tmp_path / "short.mp4"
    write_av(short, [np.full((40, 48, 3), 9, np.uint8)] * 8, 16, np.zeros((1, 8000), np.float32), 16000)
    build_manifest(media, tmp_path / "m.jsonl", progress=False)
    rows = read_jsonl(tmp_path / "m.jsonl")[:3]
    write_jsonl(tmp_path / "mixed.jsonl", rows + [{"path": str(silent), "duration": 2.0},  # hand-written: probed
                                                   {**rows[0], "path": str(short), "duration": 0.5}])
    res = write_shards(tmp_path / "mixed.jsonl", tmp_path / "s", ShardConfig(require_audio=True, min_duration=1.0),
                       progress=False)
    reasons = sorted(r["reason"] for r in res.rejected)
    assert res.samples == 3 and reasons[0] == "no audio stream" and reasons[1].startswith("too short")
    plan = json.loads((tmp_path / "s" / "plan.json").read_text())
    assert plan["require_audio"] is True and plan["min_duration"] == 1.0
    with pytest.raises(ValueError, match="differs in require_audio"):  # a part of the same array with other filters
        write_shards(tmp_path / "mixed.jsonl", tmp_path / "s", ShardConfig(min_duration=1.0), progress=False)


def test_two_writers_of_one_shard_do_not_share_a_temporary(media, tmp_path, monkeypatch):
    """A retried array task while the first still runs (or two PID namespaces: the same pid) on the same part."""
    import os
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from avssl.data import shard_writer

    out = tmp_path / "s"
    out.mkdir()
    files = [(i, str(p), None, i, None) for i, p in enumerate(sorted(media.glob("*.mp4"))[:2])]
    meet = threading.Barrier(2, timeout=30)
    real = shard_writer._facts

    def both_mid_write(path, row, cfg):
        if path == files[1][1]:
            meet.wait()  # each writer has half its shard in its temporary file
        return real(path, row, cfg)

    monkeypatch.setattr(shard_writer, "_facts", both_mid_write)
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    job = (0, files, ShardConfig(), str(out))
    with ThreadPoolExecutor(2) as ex:
        records = list(ex.map(shard_writer._write_one, [job, job]))
    assert records[0] == records[1] and records[0]["count"] == 2
    assert [s["__key__"] for s in read_samples(str(out / "000000.tar"))] == ["000000000", "000000001"]
    assert not list(out.glob(".*tmp*"))


def test_files_written_keep_the_umask_permissions(media, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        build_manifest(media, tmp_path / "m.jsonl", progress=False)
        _write(media, tmp_path / "s", per=6)
        made = [tmp_path / "m.jsonl", tmp_path / "s" / "shards.json", tmp_path / "s" / "000000.json",
                tmp_path / "s" / "000000.tar", tmp_path / "s" / "plan.json"]
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in made} == {p.name: "0o644" for p in made}
        os.umask(0o027)
        build_manifest(media, tmp_path / "m2.jsonl", progress=False)
        assert oct((tmp_path / "m2.jsonl").stat().st_mode & 0o777) == "0o640"
    finally:
        os.umask(old)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_with_two_workers_over_a_damaged_collection_train_and_resume_exactly(media, tmp_path):
    """Issue 31's 'done when': 2 processes x 2 loader workers over shards of which one is truncated and one empty,
    fewer non-empty shards than slots: the workers are capped, the epochs train, the skipped samples and shard are
    recorded, and a run stopped inside an epoch resumes to the uninterrupted run's weights."""
    import os
    import subprocess
    import sys

    from avssl.data.collection import write_jsonl
    from avssl.train.checkpoint import load_checkpoint

    silent = tmp_path / "silent.mp4"
    write_av(silent, [np.full((40, 48, 3), 9, np.uint8)] * 32, 16)
    build_manifest(media, tmp_path / "m.jsonl", progress=False)
    rows = read_jsonl(tmp_path / "m.jsonl")[:6]
    write_jsonl(tmp_path / "list.jsonl", rows + [{"path": str(silent), "duration": 2.0}])
    s = tmp_path / "s"
    write_shards(tmp_path / "list.jsonl", s, ShardConfig(samples_per_shard=3, require_audio=True), progress=False)
    whole = (s / "000001.tar").read_bytes()
    (s / "000001.tar").write_bytes(whole[: len(whole) // 2])
    merge_shards(s)
    assert [sh["count"] for sh in json.loads((s / "shards.json").read_text())["shards"]] == [3, 3, 0]
    root = Path(__file__).resolve().parents[2]

    def run(out: Path, steps: int, port: int) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", "-m",
               "avssl", "pretrain", "--config", str(root / "configs" / "pretrain" / "avid_small_cpu.yaml"),
               "--output-dir", str(out)]
        for o in (f"data.shards={s}/{{000000..000002}}.tar", "data.num_workers=2", "optim.batch_size=1",
                  "optim.epochs=3", f"run.max_steps={steps}", "run.progress=false", "run.log_every=1",
                  "loss.num_negatives=2", "run.device=cpu", "eval.every=0"):
            cmd += ["--set", o]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=root,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))

    full = run(tmp_path / "full", 9, 29571)
    assert full.returncode == 0, full.stderr[-3000:]
    assert "each process uses 1" in full.stdout  # 2 non-empty shards for 2 x 2 slots
    skipped = [json.loads(x) for x in (tmp_path / "full" / "skipped.jsonl").read_text().splitlines()]
    assert any(x["path"].endswith("000001.tar") and "unreadable shard" in x["reason"] for x in skipped)
    part = run(tmp_path / "resumed", 4, 29573)  # stops inside the second epoch (3 steps each)
    assert part.returncode == 0, part.stderr[-3000:]
    done = run(tmp_path / "resumed", 9, 29575)
    assert done.returncode == 0 and "resuming" in done.stdout, done.stderr[-3000:]
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "resumed"))
    assert a["step"] == b["step"] == 9
    for key in ("model", "loss"):
        for name, t in a[key].items():
            torch.testing.assert_close(b[key][name], t, rtol=0, atol=0, equal_nan=True, msg=f"{key}.{name}")


def test_the_index_pass_counts_local_shards_from_their_headers_as_the_reader_groups_them(media, tmp_path):
    from avssl.data import shards as shards_mod

    files = sorted(media.glob("*.mp4"))
    _tar(tmp_path / "odd.tar", [("__meta__", b"x"), ("a.mp4", files[0].read_bytes()), ("a.json", b"{}"),
                                ("dir/b.mp4", files[1].read_bytes()), ("noext", b"-"), ("c.mp4", files[2].read_bytes()),
                                ("c.txt", b"t"), ("a.wav", b"again")])
    s = _write(media, tmp_path / "s", per=5)
    for url in [str(tmp_path / "odd.tar"), str(s / "000000.tar"), str(s / "000002.tar")]:
        assert shards_mod._count(url) == (sum(1 for _ in read_samples(url)), None), url


def _v2d(media: Path, folder: Path, damage: bool = True) -> str:
    """Four shards as video2dataset writes them (no shards.json, no avssl index): 00001 cut inside a sample's data
    (a download cut short) and 00003 of zero bytes."""
    folder.mkdir()
    files = sorted(media.glob("*.mp4"))
    for k in range(4):
        _tar(folder / f"{k:05d}.tar", [(f"{k:05d}{i:04d}{ext}", data) for i, f in enumerate(files[3 * k : 3 * k + 3])
                                       for ext, data in ((".mp4", f.read_bytes()), (".json", b'{"status": "ok"}'))])
    if damage:
        whole = (folder / "00001.tar").read_bytes()
        (folder / "00001.tar").write_bytes(whole[: len(whole) // 2])
        (folder / "00003.tar").write_bytes(b"")
    return str(folder / "{00000..00003}.tar")


def test_the_index_pass_counts_a_damaged_shard_up_to_its_damage_and_goes_on(media, tmp_path):
    spec = _v2d(media, tmp_path / "v2d")
    index = load_shard_index(spec)
    counts = {Path(s["url"]).name: (s["count"], s.get("damaged")) for s in index.shards}
    assert counts["00000.tar"] == (3, None) and counts["00002.tar"] == (3, None)
    assert counts["00003.tar"] == (0, "unreadable shard: an empty file (0 bytes)")
    n, why = counts["00001.tar"]
    assert 1 <= n <= 2 and why.startswith(f"unreadable shard (after {n} samples)")
    assert json.loads((tmp_path / "v2d" / "avssl-index.json").read_text())["samples"] == 6 + n


def test_pretraining_and_embedding_over_damaged_v2d_shards_without_an_index_record_them_and_go_on(media, tmp_path,
                                                                                                  capsys):
    """The user's run: video2dataset shards (never a shards.json), two of them damaged."""
    spec = _v2d(media, tmp_path / "v2d")
    small = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "avid_small_cpu.yaml"
    argv = ["pretrain", "--config", str(small), "--output-dir", str(tmp_path / "run")]
    for o in (f"data.shards={spec}", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=1",
              "run.progress=false", "loss.num_negatives=4", "run.device=cpu", "eval.every=0"):
        argv += ["--set", o]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1 shard with no readable sample left out (e.g. " in out and "00003.tar" in out
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert any(x["path"].endswith("00003.tar") and "empty file" in x["reason"] for x in skipped)
    assert any(x["path"].endswith("00001.tar") and "unreadable shard" in x["reason"] for x in skipped)
    assert main(argv) == 0 and len((tmp_path / "run" / "skipped.jsonl").read_text().splitlines()) == len(skipped)
    ckpt = tmp_path / "run" / "last.pt"
    assert main(["embed", spec, "--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "emb"), "--quiet",
                 "--device", "cpu", "--workers", "0"]) == 0
    rejected = [json.loads(x) for x in (tmp_path / "emb" / "rejected.jsonl").read_text().splitlines()]
    assert {Path(r["path"].split(":")[0]).name for r in rejected} >= {"00001.tar", "00003.tar"}
    summary = json.loads((tmp_path / "emb" / "embed.json").read_text())
    assert summary["clips"] >= 6 and summary["rejected"] >= 2  # the undamaged shards whole, the rest named


def test_a_shard_folder_copied_without_its_times_is_the_same_collection(media, tmp_path):
    """cp -r (or staging to a local disk) gives every shard a new modification time: not a changed shard."""
    import os
    import shutil

    s = _write(media, tmp_path / "s")
    copy = tmp_path / "copy"
    shutil.copytree(s, copy, copy_function=shutil.copyfile)  # contents only, as cp -r without -p
    for f in copy.glob("*.tar"):
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    index = load_shard_index(str(copy / "{000000..000003}.tar"))
    assert index.samples == 12
    v2d = _v2d(media, tmp_path / "v2d", damage=False)
    load_shard_index(v2d)
    for f in (tmp_path / "v2d").glob("*.tar"):
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    assert load_shard_index(v2d).samples == 12
    one = copy / "000002.tar"
    data = bytearray(one.read_bytes())
    data[-2000] ^= 0xFF  # same size, another content at its end: changed
    one.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="000002.tar changed since"):
        load_shard_index(str(copy / "{000000..000003}.tar"))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_over_damaged_v2d_shards_without_an_index_train_and_record_them(media, tmp_path):
    import os
    import subprocess
    import sys

    spec = _v2d(media, tmp_path / "v2d")
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29577", "-m", "avssl",
           "pretrain", "--config", str(root / "configs" / "pretrain" / "avid_small_cpu.yaml"), "--output-dir",
           str(tmp_path / "run")]
    for o in (f"data.shards={spec}", "data.num_workers=1", "optim.batch_size=2", "optim.epochs=2",
              "run.progress=false", "loss.num_negatives=2", "run.device=cpu", "eval.every=0"):
        cmd += ["--set", o]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=root,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert {Path(x["path"]).name for x in skipped} >= {"00001.tar", "00003.tar"}
