"""`avssl embed`: the model's own forward on the same clips, per window or per video, from files or shards; parts
that survive a killed run; two processes writing what one writes; broken files recorded."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import avssl
from avssl.cli import main
from avssl.data.clips import ClipSpec
from avssl.data.datasets import ClipMaker
from avssl.train.checkpoint import pretrained_model
from tests.conftest import small_collection, train_small

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("embed")
    manifest = small_collection(d, 6, seed=4, width=64, height=48, fps=16, duration=2.5, sample_rate=16000)
    ckpt = train_small(manifest, d / "run", "optim.batch_size=3", "run.max_steps=2", "loss.num_negatives=4")
    return {"dir": d, "media": d / "media", "ckpt": ckpt, "manifest": manifest}


def _table(folder: Path) -> dict[tuple[str, int], dict]:
    t = pq.read_table(folder / "clips").to_pylist()
    return {(r["key"], r["clip"]): r for r in t}


def test_embeddings_are_the_models_forward_on_the_same_clips(trained):
    model, cfg = pretrained_model(trained["ckpt"])
    got = avssl.embed(trained["media"], trained["ckpt"], window=1.0, device="cpu")
    assert len(got["key"]) == 6 * 2 and got["video"].shape == (12, 32) and got["rejected"] == []
    assert list(got["start"][:2]) == [0.0, 1.0] and list(got["end"][:2]) == [1.0, 2.0]
    maker = ClipMaker(cfg.data, train=False)
    entry = {"path": got["path"][1], "duration": 2.5}
    clip = cfg.data.clip
    item = maker.item(entry, 0, spec=ClipSpec(1.5 - clip.video_duration / 2))  # the clip centred on window [1, 2)
    with torch.no_grad():
        v = model.embed_video(item["video"][None])[0].numpy()
        a = model.embed_audio(item["audio"][None])[0].numpy()
    np.testing.assert_allclose(got["video"][1], v, atol=1e-5)
    np.testing.assert_allclose(got["audio"][1], a, atol=1e-5)
    pooled = avssl.embed(trained["media"], trained["ckpt"], clips_per_video=1, layer="pooled", modalities=("video",),
                         device="cpu")
    assert pooled["video"].shape == (6, model.video.out_dim) and "audio" not in pooled


def test_the_command_writes_parts_means_and_a_summary_and_records_broken_files(trained, tmp_path, capsys):
    media = tmp_path / "media"
    shutil.copytree(trained["media"], media)
    (media / "text.mp4").write_text("not a video")
    good = media / "clip_00002.mp4"
    cut = media / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])  # probes (header first) or not: recorded
    out = tmp_path / "feats"
    assert main(["embed", str(media), "--checkpoint", str(trained["ckpt"]), "--output-dir", str(out), "--quiet",
                 "--device", "cpu", "--clips-per-video", "2", "--video-means", "--dtype", "float16",
                 "--part-size", "2", "--workers", "1"]) == 0
    summary = json.loads((out / "embed.json").read_text())
    rejected = [json.loads(x)["path"] for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert str(media / "text.mp4") in rejected and any(p.endswith("cut.mp4") for p in rejected)
    rows = _table(out)
    assert len(rows) == 12 == summary["clips"] and summary["parts_written"] == summary["parts"]
    assert pq.read_table(out / "clips").schema.field("video").type.value_type == "halffloat"
    means = pq.read_table(out / "videos").to_pylist()
    assert len(means) == 6 and all(m["clips"] == 2 for m in means)
    v = np.asarray(means[0]["video"], np.float32)
    assert abs(np.linalg.norm(v) - 1) < 1e-2


def test_a_killed_run_starts_again_where_it_stopped(trained, tmp_path, monkeypatch):
    from avssl import embeddings

    argv = ["embed", str(trained["manifest"]), "--checkpoint", str(trained["ckpt"]), "--quiet", "--device", "cpu",
            "--part-size", "2", "--workers", "0"]
    assert main([*argv, "--output-dir", str(tmp_path / "whole")]) == 0
    real, written = embeddings._write_parquet, []

    def dies_after_two(table, path):
        if len(written) == 2:
            raise KeyboardInterrupt  # as a kill: the third part never lands
        real(table, path)
        written.append(path)

    monkeypatch.setattr(embeddings, "_write_parquet", dies_after_two)
    assert main([*argv, "--output-dir", str(tmp_path / "killed")]) == 130
    parts = sorted((tmp_path / "killed" / "clips").glob("*.parquet"))
    assert len(parts) == 2
    kept = [p.stat().st_mtime_ns for p in parts]
    monkeypatch.setattr(embeddings, "_write_parquet", real)
    assert main([*argv, "--output-dir", str(tmp_path / "killed")]) == 0
    assert [p.stat().st_mtime_ns for p in parts] == kept  # finished parts are not embedded again
    a, b = _table(tmp_path / "whole"), _table(tmp_path / "killed")
    assert a.keys() == b.keys() and all(np.allclose(a[k]["video"], b[k]["video"]) for k in a)


def test_shards_embed_as_their_files_do(trained, tmp_path):
    from avssl.data.shard_writer import ShardConfig, write_shards

    write_shards(trained["media"], tmp_path / "s", ShardConfig(samples_per_shard=4), progress=False)
    files = avssl.embed(trained["media"], trained["ckpt"], device="cpu")
    shards = avssl.embed(str(tmp_path / "s" / "{000000..000001}.tar"), trained["ckpt"], device="cpu")
    order = np.argsort(shards["path"])  # shard keys are the files' positions, in listing order
    np.testing.assert_allclose(shards["video"][order], files["video"], atol=1e-6)
    np.testing.assert_allclose(shards["audio"][order], files["audio"], atol=1e-6)


def test_options_that_cannot_work_end_with_one_line(trained, tmp_path, capsys):
    base = ["embed", str(trained["media"]), "--checkpoint", str(trained["ckpt"]), "--output-dir", str(tmp_path / "o")]
    for extra, message in ((["--modality", "sound"], "--modality"), (["--stride", "1"], "--stride goes with --window"),
                           (["--window", "0"], "--window")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert main(["embed", str(tmp_path / "nowhere"), "--checkpoint", str(trained["ckpt"]), "--output-dir",
                 str(tmp_path / "o")]) == 2
    assert "nowhere: no such" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_write_the_rows_one_process_writes(trained, tmp_path):
    def run(out: Path, nproc: int) -> None:
        launch = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=29581"]
                  if nproc > 1 else [sys.executable])
        res = subprocess.run([*launch, "-m", "avssl", "embed", str(trained["manifest"]), "--checkpoint",
                              str(trained["ckpt"]), "--output-dir", str(out), "--quiet", "--device", "cpu",
                              "--part-size", "2", "--window", "1", "--workers", "1"], capture_output=True, text=True,
                             timeout=300, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert res.returncode == 0, res.stderr[-3000:]

    run(tmp_path / "one", 1)
    run(tmp_path / "two", 2)
    a, b = _table(tmp_path / "one"), _table(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) == 12
    for k in a:
        np.testing.assert_allclose(a[k]["video"], b[k]["video"], atol=1e-6)
        np.testing.assert_allclose(a[k]["audio"], b[k]["audio"], atol=1e-6)
    assert json.loads((tmp_path / "two" / "embed.json").read_text())["clips"] == 12


def test_a_part_whose_videos_all_fail_reads_back_with_the_others(trained, tmp_path):
    """Its tables are empty, yet the folder of parts reads as one table (clips and video means alike)."""
    rows = [json.loads(x) for x in trained["manifest"].read_text().splitlines()]
    gone = dict(rows[0], path=str(tmp_path / "gone.mp4"))  # listed with its facts, gone before it is embedded
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [gone, *rows[:2]]))
    out = tmp_path / "feats"
    assert main(["embed", str(manifest), "--checkpoint", str(trained["ckpt"]), "--output-dir", str(out), "--quiet",
                 "--device", "cpu", "--video-means", "--part-size", "1", "--workers", "0"]) == 0
    assert (out / "clips" / "part-000000.parquet").exists()
    assert len(pq.read_table(out / "clips")) == 2 and len(pq.read_table(out / "videos")) == 2
    assert [json.loads(x)["path"] for x in (out / "rejected.jsonl").read_text().splitlines()] == [gone["path"]]


def _other_checkpoint(ckpt: Path, out: Path) -> Path:
    """The same model with one weight changed (another checkpoint of the same architecture)."""
    ck = torch.load(ckpt, weights_only=True)
    name = next(k for k, v in ck["model"].items() if v.is_floating_point() and v.dim() > 1)
    ck["model"][name] = ck["model"][name] + 0.5
    torch.save(ck, out)
    return out


def _embed(source: Path, ckpt: Path, out: Path, *extra: str) -> int:
    return main(["embed", str(source), "--checkpoint", str(ckpt), "--output-dir", str(out), "--quiet", "--device",
                 "cpu", "--workers", "0", "--part-size", "2", *extra])


@pytest.mark.parametrize("change", ["checkpoint", "source", "--clips-per-video", "--modality", "--layer", "--window",
                                    "--set"])
def test_a_folder_of_another_runs_embeddings_is_not_reused(trained, tmp_path, capsys, change):
    """The user's mistake: a second run into the folder of a first one, with something changed."""
    out = tmp_path / "emb"
    assert _embed(trained["media"], trained["ckpt"], out) == 0
    before = _table(out)
    source, ckpt, extra = trained["media"], trained["ckpt"], []
    if change == "checkpoint":
        ckpt = _other_checkpoint(trained["ckpt"], tmp_path / "other.pt")
    elif change == "source":
        source = tmp_path / "other_media"
        source.mkdir()
        for f in sorted(trained["media"].glob("*.mp4"))[:3]:
            shutil.copy(f, source / f"x_{f.name}")
    else:
        extra = {"--clips-per-video": ["--clips-per-video", "2"], "--modality": ["--modality", "video"],
                 "--layer": ["--layer", "pooled"], "--window": ["--window", "1"],
                 "--set": ["--set", "data.clip.fps=4"]}[change]
    capsys.readouterr()
    assert _embed(source, ckpt, out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not reused" in err[0] and "--output-dir" in err[0], err
    words = {"checkpoint": "another model", "source": "another source", "--set": "data.clip.fps"}.get(change, change)
    assert words in err[0]
    after = _table(out)  # nothing of the first run was changed
    assert after.keys() == before.keys() and all(np.array_equal(after[k]["video"], before[k]["video"]) for k in after)


def test_the_same_run_again_reuses_every_part_and_another_path_to_the_same_weights_too(trained, tmp_path, capsys):
    out = tmp_path / "emb"
    assert _embed(trained["media"], trained["ckpt"], out) == 0
    parts = sorted((out / "clips").glob("*.parquet"))
    kept = [p.stat().st_mtime_ns for p in parts]
    copy = tmp_path / "copy.pt"
    shutil.copy(trained["ckpt"], copy)
    capsys.readouterr()
    assert _embed(trained["media"], copy, out, "--batch-size", "5") == 0  # batch size changes no result
    assert "3 parts already written, 0 to go" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in parts] == kept


def test_a_file_added_to_the_folder_between_a_killed_run_and_its_resume_is_refused(trained, tmp_path, monkeypatch,
                                                                                     capsys):
    """Parts are slices of the listing: a resume over a changed folder would give a video twice and lose another."""
    from avssl import embeddings

    media = tmp_path / "media"
    shutil.copytree(trained["media"], media)
    out = tmp_path / "emb"
    real = embeddings._write_part

    def dies_after_one(out_, part, rows, spec):
        if part.number == 1:
            raise KeyboardInterrupt
        real(out_, part, rows, spec)

    monkeypatch.setattr(embeddings, "_write_part", dies_after_one)
    assert _embed(media, trained["ckpt"], out) == 130
    err = capsys.readouterr().err
    assert "interrupted: 1 of 3 parts finished and kept" in err and "nothing saved" not in err
    monkeypatch.setattr(embeddings, "_write_part", real)
    shutil.copy(media / "clip_00003.mp4", media / "clip_00000b.mp4")  # sorts into the first part
    assert _embed(media, trained["ckpt"], out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 added (e.g. " in err[0] and "clip_00000b.mp4" in err[0]


def test_a_kill_between_a_parts_files_redoes_the_part(trained, tmp_path, monkeypatch):
    """Killed after a part's clips were written and before its video means: the part is not counted as done."""
    from avssl import embeddings

    out = tmp_path / "emb"
    real, seen = embeddings._write_parquet, []

    def dies_before_the_second_means(table, path):
        if path.parent.name == "videos" and path.name == "part-000001.parquet":
            raise KeyboardInterrupt
        real(table, path)
        seen.append(path)

    monkeypatch.setattr(embeddings, "_write_parquet", dies_before_the_second_means)
    assert _embed(trained["media"], trained["ckpt"], out, "--video-means") == 130
    assert (out / "clips" / "part-000001.parquet").exists() and not (out / "done" / "part-000001.json").exists()
    monkeypatch.setattr(embeddings, "_write_parquet", real)
    assert _embed(trained["media"], trained["ckpt"], out, "--video-means") == 0
    assert len(pq.read_table(out / "clips")) == 6 and len(pq.read_table(out / "videos")) == 6
    assert json.loads((out / "embed.json").read_text())["clips"] == 6


def test_video_only_embeddings_take_videos_without_sound(trained, tmp_path):
    from avssl.data.decode import decode_frames
    from avssl.data.encode import write_av

    media = tmp_path / "media"
    shutil.copytree(trained["media"], media)
    frames = decode_frames(media / "clip_00000.mp4", np.arange(20) / 8)
    write_av(media / "mute.mp4", list(frames), 8, None, 16000)
    got = avssl.embed(media, trained["ckpt"], modalities=("video",), device="cpu")
    assert got["rejected"] == [] and "mute" in {Path(p).stem for p in got["path"]}
    both = avssl.embed(media, trained["ckpt"], device="cpu")
    assert [Path(r["path"]).name for r in both["rejected"]] == ["mute.mp4"]


def test_failed_embed_and_score_leave_no_folder(trained, tmp_path, capsys):
    """A source that is not there, found after the output folder was made: no empty folder is left behind."""
    for cmd in ("embed", "score"):
        out = tmp_path / cmd
        assert main([cmd, str(tmp_path / "nowhere"), "--checkpoint", str(trained["ckpt"]), "--output-dir", str(out),
                     "--quiet", "--device", "cpu"]) == 2
        assert "nowhere: no such" in capsys.readouterr().err and not out.exists()
