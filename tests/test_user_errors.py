"""What a new user hit on real media (issue 32): every mistake ends with one line naming the file, row or key and
status 2; nothing a user gives leaves a traceback or an empty run folder behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from avssl.cli import main
from avssl.data.collection import build_manifest, read_manifest, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"


def _one_line(capsys, status: int, rc: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == status and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _pretrain(out: Path, *over: str) -> list[str]:
    argv = ["pretrain", "--config", str(SMALL), "--output-dir", str(out)]
    for o in ("run.progress=false", "run.device=cpu", "data.num_workers=0", "optim.batch_size=4", *over):
        argv += ["--set", o]
    return argv


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from avssl.data.synthetic import SynthSpec, synthesize

    d = tmp_path_factory.mktemp("media")
    synthesize(d / "media", 5, seed=0, spec=SynthSpec(width=64, height=48, fps=16, duration=1.5, sample_rate=16000))
    build_manifest(d / "media", d / "m.jsonl", progress=False)
    return d / "m.jsonl"


def test_a_broken_manifest_line_is_named_by_its_line(manifest, tmp_path, capsys):
    lines = manifest.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines[:2] + ['{"path": "x.mp4", "duration": '] + lines[2:]) + "\n")
    line = _one_line(capsys, 2, main(_pretrain(tmp_path / "run", f"data.manifest={broken}", "eval.holdout=0.3",
                                               "eval.every=1")))
    assert line.startswith(f"avssl: {broken}, line 3: not valid JSON") and "config error" not in line
    assert '(Expecting value at the end of the line: cut short?): {"path": "x.mp4", "duration":' in line
    assert not (tmp_path / "run").exists()  # no empty run folder left behind
    line = _one_line(capsys, 2, main(_pretrain(tmp_path / "run", f"data.manifest={broken}")))
    assert f"{broken}, line 3: not valid JSON" in line
    rc = main(["data", "shard", str(broken), "--output-dir", str(tmp_path / "s"), "--quiet"])
    assert f"{broken}, line 3" in _one_line(capsys, 2, rc)


def test_a_manifest_row_without_a_duration_is_named(manifest, tmp_path, capsys):
    rows = read_manifest(manifest)
    del rows[3]["duration"]
    write_jsonl(tmp_path / "m.jsonl", rows)
    line = _one_line(capsys, 2, main(_pretrain(tmp_path / "run", f"data.manifest={tmp_path / 'm.jsonl'}")))
    assert "1 of 5 rows have no duration, the first row 4" in line and rows[3]["path"] in line


def test_data_commands_on_paths_that_do_not_exist_or_are_one_file(manifest, tmp_path, capsys):
    assert "nonexist: no such folder or file" in _one_line(
        capsys, 2, main(["data", "manifest", str(tmp_path / "nonexist"), "-o", str(tmp_path / "x.jsonl")]))
    assert "nonexistent: no such folder or file" in _one_line(
        capsys, 2, main(["data", "reencode", str(tmp_path / "nonexistent"), "--output-dir", str(tmp_path / "x")]))
    video = read_manifest(manifest)[0]["path"]  # a single media file: a collection of one
    assert main(["data", "manifest", video, "-o", str(tmp_path / "one.jsonl"), "--quiet"]) == 0
    assert [r["path"] for r in read_manifest(tmp_path / "one.jsonl")] == [video]
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    assert main(["data", "manifest", str(tmp_path / "empty"), "-o", str(tmp_path / "e.jsonl"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "0 usable files" in err and "no media file found in" in err
    assert main(["data", "manifest", video, "-o", str(tmp_path / "one.jsonl"), "--quiet"]) == 0
    assert "1 usable file (" in capsys.readouterr().err  # not "1 usable files"


@pytest.mark.parametrize("content", [b"just some text\n", b"\x80\x02}q\x00.", b"PK\x03\x04 not a zip"])
def test_a_file_that_is_no_checkpoint_is_said_so_without_unsafe_advice(manifest, tmp_path, capsys, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    video = read_manifest(manifest)[0]["path"]
    for argv in (["localize", "--checkpoint", str(bad), "--video", video, "--output-dir", str(tmp_path / "o")],
                 ["evaluate", "retrieval", "--checkpoint", str(bad), "--data", str(manifest), "--output-dir",
                  str(tmp_path / "o")],
                 _pretrain(tmp_path / "run", f"data.manifest={manifest}", f"run.init_from={bad}")):
        line = _one_line(capsys, 2, main(argv))
        assert "PyTorch checkpoint" in line and "weights_only" not in line and "Python objects" not in line, line


def test_a_corrupt_last_pt_says_how_to_go_on(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_pretrain(out, f"data.manifest={manifest}", "optim.epochs=1", "run.checkpoint_every=1")) == 0
    (out / "last.pt").write_bytes((out / "last.pt").read_bytes()[:1000])
    capsys.readouterr()
    line = _one_line(capsys, 2, main(_pretrain(out, f"data.manifest={manifest}", "optim.epochs=2")))
    assert "last.pt: not a readable PyTorch checkpoint" in line and "copy epoch_0001.pt over it" in line


def test_too_few_clips_for_a_batch_suggests_what_to_set(manifest, tmp_path, capsys):
    line = _one_line(capsys, 2, main(_pretrain(tmp_path / "run", f"data.manifest={manifest}", "optim.batch_size=32")))
    assert "an epoch has 5 clips, fewer than one batch (32 x 1 process)" in line
    assert "optim.batch_size=5" in line and "data.clips_per_video=7" in line


def test_ffmpeg_does_not_speak_beside_avssl(tmp_path):
    import subprocess
    import sys

    cut = tmp_path / "cut.mp4"
    cut.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 2000)  # "moov atom not found"
    res = subprocess.run([sys.executable, "-m", "avssl", "data", "probe", str(cut)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 1 and res.stderr == ""  # avssl's own line names the file and FFmpeg's reason
    out = json.loads(res.stdout)
    assert out["path"] == str(cut) and "moov atom not found" in out["error"]


def test_the_cache_is_built_before_training_with_a_line_saying_so(manifest, tmp_path, capsys):
    media = tmp_path / "media"
    shutil.copytree(manifest.parent / "media", media)
    build_manifest(media, tmp_path / "m.jsonl", progress=False)
    assert main(_pretrain(tmp_path / "run", f"data.manifest={tmp_path / 'm.jsonl'}", "data.cache=true",
                          "optim.epochs=1", "run.progress=true")) == 0
    captured = capsys.readouterr()
    assert "cache: decoding 5 videos (0.1 min of video) once, before training" in captured.out
    before = captured.out.index("cache: decoding")
    assert before < captured.out.index("pretraining (AVID")


def test_an_output_folder_that_is_a_file_is_one_line_for_every_command(manifest, tmp_path, capsys):
    """The user's mistake: --output-dir naming an existing file (a traceback in six commands before)."""
    taken = tmp_path / "taken.txt"
    taken.write_text("the user's notes\n")
    video = read_manifest(manifest)[0]["path"]
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"")
    for argv in (["embed", str(manifest), "--checkpoint", str(ck), "--output-dir", str(taken)],
                 ["score", str(manifest), "--checkpoint", str(ck), "--output-dir", str(taken)],
                 ["localize", "--checkpoint", str(ck), "--video", video, "--output-dir", str(taken)],
                 ["report", str(tmp_path), "--output-dir", str(taken)],
                 _pretrain(taken, f"data.manifest={manifest}"),
                 ["embed", str(manifest), "--checkpoint", str(ck), "--output-dir", str(taken / "sub")]):
        line = _one_line(capsys, 2, main(argv))
        assert str(taken) in line and "a file, not a folder" in line, line
    for argv in (["data", "manifest", str(manifest.parent / "media"), "-o", str(tmp_path)],
                 ["data", "manifest", str(manifest.parent / "media"), "-o", str(taken / "m.jsonl")]):
        line = _one_line(capsys, 2, main(argv))
        assert line.startswith("avssl data manifest: -o/--output") and ("a folder, not a file" in line
                                                               or "is a file, not a folder" in line), line
    assert taken.read_text() == "the user's notes\n"


@pytest.mark.parametrize("what,kind", [("video", "an MP4/MOV video"), ("page", "an HTML page"), ("empty", "an empty file")])
def test_a_checkpoint_that_is_a_video_or_a_web_page_is_named_for_what_it_is(manifest, tmp_path, capsys, what, kind):
    video = read_manifest(manifest)[0]["path"]
    bad = tmp_path / "model.pt"
    if what == "video":
        shutil.copy(video, bad)
    else:
        bad.write_bytes(b"<!DOCTYPE html><html><body>Sign in</body></html>" if what == "page" else b"")
    line = _one_line(capsys, 2, main(["localize", "--checkpoint", str(bad), "--video", video, "--output-dir",
                                      str(tmp_path / "o")]))
    assert f"not a PyTorch checkpoint: it is {kind}" in line and "Python objects" not in line
    assert not (tmp_path / "o").exists()
