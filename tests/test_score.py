"""`avssl score`: does each video's sound belong to its picture? Scores sorted from least to most, a manifest of the
videos that pass, and on a model trained in the test, videos whose audio was swapped below their originals."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from avssl.cli import main
from avssl.evaluation.correspondence import correspondence_scores
from tests.conftest import small_collection, train_small

SPEC = dict(width=64, height=48, fps=8, duration=2.0, sample_rate=16000, num_distractors=0)


def _swapped(files: list[Path], out: Path) -> list[tuple[str, str]]:
    """Each file, and a copy whose sound is another class's: (original key, swapped key)."""
    from avssl.data.decode import decode_audio, decode_frames, probe
    from avssl.data.encode import write_av

    classes = [json.loads(f.with_suffix(".json").read_text())["class_name"] for f in files]
    out.mkdir()
    pairs = []
    for i, f in enumerate(files):
        shutil.copy(f, out / f.name)
        j = next(k for k in range(len(files)) if classes[k] != classes[i])
        info = probe(f)
        frames = decode_frames(f, np.arange(int(info.duration * 8)) / 8)
        audio = decode_audio(files[j], 0, info.duration, 16000).waveform
        write_av(out / f"{f.stem}_swapped.mp4", list(frames), 8, audio[None], 16000)
        pairs.append((f.stem, f"{f.stem}_swapped"))
    return pairs


def test_scores_and_ranks_by_hand():
    v = np.eye(4)
    a = np.eye(4)
    a[2], a[3] = np.eye(4)[3], np.eye(4)[2]  # videos 2 and 3 carry each other's sound
    s = correspondence_scores(v, a)
    assert s["score"].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert s["rank"][:2].tolist() == [1, 1] and s["rank"][2] > 1 and s["rank_score"][0] == 1.0


def test_the_command_writes_sorted_scores_and_the_manifest_of_what_passes(tmp_path, capsys):
    manifest = small_collection(tmp_path, 4, seed=1, **SPEC)
    ckpt = train_small(manifest, tmp_path / "run", "optim.batch_size=2", "run.max_steps=1", "loss.num_negatives=2")
    out = tmp_path / "score"
    assert main(["score", str(manifest), "--checkpoint", str(ckpt), "--output-dir", str(out), "--quiet",
                 "--device", "cpu", "--clips-per-video", "2", "--workers", "0"]) == 0
    rows = list(csv.DictReader(open(out / "scores.csv")))
    scores = [float(r["score"]) for r in rows]
    assert len(rows) == 4 and scores == sorted(scores)  # least to most corresponding
    assert json.loads((out / "scores.json").read_text())[0]["key"] == rows[0]["key"]
    cut = (scores[1] + scores[2]) / 2
    capsys.readouterr()
    assert main(["score", str(manifest), "--checkpoint", str(ckpt), "--output-dir", str(out), "--quiet",
                 "--device", "cpu", "--clips-per-video", "2", "--workers", "0", "--below", str(cut)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    kept = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()]
    assert summary["kept"] == len(kept) == 2 and summary["dropped"] == 2
    originals = {r["path"]: r for r in map(json.loads, manifest.read_text().splitlines())}
    assert all(r == originals[r["path"]] for r in kept)  # the manifest's own rows, for avssl pretrain
    assert {r["key"] for r in map(json.loads, (out / "dropped.jsonl").read_text().splitlines())} == \
        {rows[0]["key"], rows[1]["key"]}


@pytest.mark.slow
def test_videos_whose_sound_was_swapped_score_below_their_originals(tmp_path):
    """96 synthetic clips of 6 kinds, each with its own sound; the small config pretrained for 40 epochs (about two
    minutes on 2 cores); 8 of its clips and the same 8 with another kind's sound."""
    manifest = small_collection(tmp_path, 96, seed=1, **SPEC)
    ckpt = train_small(manifest, tmp_path / "run", "optim.batch_size=32", "optim.epochs=40")
    pairs = _swapped(sorted((tmp_path / "media").glob("*.mp4"))[:8], tmp_path / "mix")
    assert main(["score", str(tmp_path / "mix"), "--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "s"),
                 "--quiet", "--device", "cpu", "--workers", "0"]) == 0
    rows = json.loads((tmp_path / "s" / "scores.json").read_text())
    score = {r["key"]: r["score"] for r in rows}
    below = sum(score[b] < score[a] for a, b in pairs)
    assert below >= 6, (below, [(score[a], score[b]) for a, b in pairs])
    bottom = [r["key"] for r in rows[:8]]
    assert sum(k.endswith("_swapped") for k in bottom) >= 6  # cleaning drops the swapped ones first


def test_a_single_video_ranks_first_of_one():
    rng = np.random.default_rng(0)
    for d in (32, 128, 512):
        v = rng.standard_normal((1, d)).astype(np.float32)
        s = correspondence_scores(v, v + 0.1 * rng.standard_normal((1, d)).astype(np.float32))
        assert s["rank"].tolist() == [1] and s["rank_score"].tolist() == [1.0]


def test_a_video_whose_sound_is_its_own_picture_is_never_ranked_behind_it():
    """Unit vectors compared with themselves: the own cosine is the largest there is, whatever the rounding of a
    sum of products done two ways."""
    rng = np.random.default_rng(1)
    for n, d in ((9, 128), (200, 512), (50, 33)):
        v = rng.standard_normal((n, d)).astype(np.float32)
        s = correspondence_scores(v, v.copy())
        assert s["rank"].tolist() == [1] * n


def test_exact_ties_share_the_better_rank():
    v = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    a = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)  # videos 0 and 1: the same pictures and sound
    s = correspondence_scores(v, a)
    assert s["rank"].tolist() == [1, 1, 1] and s["rank_score"].tolist() == [1.0, 1.0, 1.0]


def test_scores_in_the_file_are_what_the_threshold_compares(tmp_path):
    from avssl.evaluation.correspondence import ranked

    s = {"score": np.array([0.4999996], np.float32), "rank": np.array([1]), "rank_score": np.array([1.0])}
    row = ranked(["k"], ["p"], s)[0]
    assert row["score"] == float(np.float32(0.4999996)) and not row["score"] >= 0.5  # not rounded up to 0.5


def test_two_scores_into_one_folder_with_other_checkpoints_end_with_one_line(tmp_path, capsys):
    """The user's mistake of 2026-12-05: runB's scores were runA's to the last digit."""
    manifest = small_collection(tmp_path, 4, seed=1, **SPEC)
    a = train_small(manifest, tmp_path / "runA", "optim.batch_size=2", "run.max_steps=1", "loss.num_negatives=2")
    b = train_small(manifest, tmp_path / "runB", "optim.batch_size=2", "run.max_steps=2", "loss.num_negatives=2")
    argv = ["--output-dir", str(tmp_path / "s"), "--quiet", "--device", "cpu", "--workers", "0"]
    assert main(["score", str(manifest), "--checkpoint", str(a), *argv]) == 0
    first = (tmp_path / "s" / "scores.csv").read_text()
    capsys.readouterr()
    assert main(["score", str(manifest), "--checkpoint", str(b), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another model" in err[0] and "runA" in err[0] and "runB" in err[0]
    assert (tmp_path / "s" / "scores.csv").read_text() == first
    assert main(["score", str(manifest), "--checkpoint", str(tmp_path / "runB"), "--output-dir",
                 str(tmp_path / "s2"), "--quiet", "--device", "cpu", "--workers", "0"]) == 0  # a run folder: last.pt
    assert "using its" in capsys.readouterr().err


def test_videos_without_sound_are_listed_first_and_dropped(tmp_path, capsys):
    from avssl.data.decode import decode_frames
    from avssl.data.encode import write_av

    manifest = small_collection(tmp_path, 3, seed=1, **SPEC)
    ckpt = train_small(manifest, tmp_path / "run", "optim.batch_size=2", "run.max_steps=1", "loss.num_negatives=1")
    media = tmp_path / "media"
    write_av(media / "mute.mp4", list(decode_frames(media / "clip_00000.mp4", np.arange(16) / 8)), 8, None, 16000)
    capsys.readouterr()
    assert main(["score", str(media), "--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "s"), "--device",
                 "cpu", "--workers", "0", "--below", "-2"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "s" / "scores.csv")))
    assert rows[0]["key"] == "mute" and rows[0]["note"] == "no audio track" and rows[0]["score"] == ""
    assert len(rows) == 4 and "1 video without an audio track" in captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["no_audio"] == 1 and summary["kept"] == 3 and summary["dropped"] == 1
    assert [json.loads(x)["key"] for x in (tmp_path / "s" / "dropped.jsonl").read_text().splitlines()] == ["mute"]
