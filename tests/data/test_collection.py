from __future__ import annotations

import json
import os
import shutil

import pytest

from avssl.cli import main
from avssl.data import collection
from avssl.data.collection import build_manifest, list_media, read_manifest, rejected_path
from tests.conftest import event_media


@pytest.fixture
def folder(tmp_path, synth_dir):
    d = tmp_path / "videos"
    (d / "sub").mkdir(parents=True)
    shutil.copy(synth_dir / "clip_00000.mp4", d / "good.mp4")
    shutil.copy(synth_dir / "clip_00001.mp4", d / "sub" / "nested.MP4")
    (d / "noise.mp4").write_bytes(os.urandom(5000))
    (d / "empty.mkv").write_bytes(b"")
    (d / "notes.txt").write_text("not media")
    event_media(d / "silent.mp4", duration=1.0, with_audio=False)
    event_media(d / "music.mp4", duration=1.0, with_video=False)
    return d


def test_list_media_finds_media_recursively(folder, tmp_path):
    names = [os.path.relpath(p, folder) for p in list_media(folder)]
    assert names == sorted(["empty.mkv", "good.mp4", "music.mp4", "noise.mp4", "silent.mp4", "sub/nested.MP4"])
    lst = tmp_path / "list.txt"
    lst.write_text("# my files\nvideos/good.mp4\n\n" + str(folder / "silent.mp4") + "\n")
    assert list_media(lst) == [str(folder / "good.mp4"), str(folder / "silent.mp4")]
    from avssl.config import InputError

    with pytest.raises(InputError, match="nope: no such folder or file"):
        list_media(tmp_path / "nope")


def test_manifest_keeps_usable_files_and_lists_rejects_with_reasons(folder, tmp_path):
    out = tmp_path / "m.jsonl"
    res = build_manifest(folder, out, workers=2, require_audio=True, progress=False)
    kept = {os.path.basename(r["path"]) for r in read_manifest(out)}
    assert kept == {"good.mp4", "nested.MP4"}
    rejected = {os.path.basename(r["path"]): r["reason"] for r in map(json.loads, rejected_path(out).open())}
    assert set(rejected) == {"noise.mp4", "empty.mkv", "silent.mp4", "music.mp4"}
    assert "empty" in rejected["empty.mkv"] and "cannot open" in rejected["noise.mp4"]
    assert "no audio" in rejected["silent.mp4"] and "no video" in rejected["music.mp4"]
    assert res.added == 2 and len(res.rejected) == 4
    entry = read_manifest(out)[0]
    assert entry["video"]["fps"] == 20 and entry["audio"]["sample_rate"] == 22050 and entry["duration"] > 0
    # Without --require-audio the silent video is usable.
    build_manifest(folder, tmp_path / "m2.jsonl", progress=False)
    assert len(read_manifest(tmp_path / "m2.jsonl")) == 3


def test_rerun_only_probes_new_or_changed_files(folder, tmp_path, synth_dir, monkeypatch):
    out = tmp_path / "m.jsonl"
    build_manifest(folder, out, progress=False)
    probed = []
    real = collection.probe
    monkeypatch.setattr(collection, "probe", lambda p, verify=False: probed.append(p) or real(p, verify))
    shutil.copy(synth_dir / "clip_00002.mp4", folder / "new.mp4")
    res = build_manifest(folder, out, progress=False)
    assert [os.path.basename(p) for p in probed] == ["new.mp4"]
    assert res.added == 1 and res.kept == 3 and res.rejected == []
    assert len(read_manifest(out)) == 4
    assert len(list(rejected_path(out).open())) == 3  # earlier rejects kept


def test_min_duration_and_verify(folder, tmp_path):
    build_manifest(folder, tmp_path / "m.jsonl", min_duration=1.5, progress=False)
    kept = {os.path.basename(r["path"]) for r in read_manifest(tmp_path / "m.jsonl")}
    assert kept == {"good.mp4", "nested.MP4"}  # the 1 s silent clip is too short


def test_cli_probe_and_manifest(folder, tmp_path, capsys):
    assert main(["data", "probe", str(folder / "good.mp4")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["video"]["codec"] == "h264"
    assert main(["data", "probe", str(folder / "good.mp4"), str(folder / "noise.mp4")]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "error" in lines[1] and lines[1]["path"].endswith("noise.mp4")
    out = tmp_path / "cli.jsonl"
    assert main(["data", "manifest", str(folder), "-o", str(out), "--require-audio", "--quiet"]) == 0
    assert "2 usable files" in capsys.readouterr().err
    assert len(read_manifest(out)) == 2
