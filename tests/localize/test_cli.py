"""`avssl localize` and `avssl evaluate localization` end to end: a composed set, a tiny MIL pretraining,
the files and page a user opens, and the scores beside the centred prior and the oracle."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest

from avssl.cli import main
from avssl.config import load_config
from avssl.data.collection import build_manifest
from avssl.data.synthetic.compose import ComposeSpec, compose
from avssl.localize.render import jet
from avssl.train.pretrain import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "pretrain" / "localize_small_cpu.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("loc")
    spec = ComposeSpec(width=96, height=64, fps=8, duration=1.5, distractors=1)
    compose(d / "train", 8, seed=1, spec=spec)
    compose(d / "test", 3, seed=2, spec=spec)
    build_manifest(d / "train", d / "m.jsonl", progress=False)
    cfg = load_config(PretrainConfig, CONFIG, [f"data.manifest={d / 'm.jsonl'}", "data.num_workers=0",
                                               "optim.batch_size=4", "optim.epochs=2", "run.progress=false",
                                               "loss.num_negatives=4", "run.device=cpu"])
    assert cfg.loss.av_pool != "mean"
    pretrain(cfg, d / "run")
    return {"dir": d, "ckpt": d / "run" / "last.pt", "test": d / "test"}


def test_localize_writes_maps_overlays_video_and_page(run, tmp_path, capsys):
    out = tmp_path / "out"
    other = run["test"] / "clip_00001.mp4"
    rc = main(["localize", "--checkpoint", str(run["ckpt"]), "--video", str(run["test"]), "--fps", "4", "--gif",
               "--audio", str(other), "--size", "64", "--output-dir", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["videos"] == 3 and summary["failed"] == []
    d = out / "clip_00000"
    sim = np.load(d / "similarity.npy")
    times = json.loads((d / "times.json").read_text())
    geometry = json.loads((d / "geometry.json").read_text())
    assert sim.dtype == np.float32 and sim.shape[0] == 6 and sim.shape[1:] != (64, 96)  # the encoder's grid
    assert times == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25] and geometry["frame"] == [64, 96]
    with av.open(str(d / "overlay.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for _ in c.decode(video=0)) == 6
    assert (d / "overlay.gif").stat().st_size > 0 and (d / "contact_sheet.png").stat().st_size > 0
    info = json.loads((d / "info.json").read_text())
    assert info["audio"] == str(other) and info["norm"] == "minmax"
    page = (out / "index.html").read_text()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert len(links) >= 3 * 4 and all((out / link).exists() for link in links)
    assert "video { width: 480px" in page  # the 96x64 clips are shown at a size a person can see


def test_evaluate_localization_reports_model_centre_and_oracle(run, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["evaluate", "localization", "--checkpoint", str(run["ckpt"]), "--annotations",
               str(run["test"] / "vggss.json"), "--media", str(run["test"]), "--binarize", "median", "adaptive",
               "--size", "64", "--output-dir", str(out), "--quiet"])
    assert rc == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["num_samples"] == 3 and res["binarize"] == "median" and res["missing_media"] == 0
    assert set(res["by_binarization"]) == {"median", "adaptive"}
    assert res["oracle"]["ciou_at_0.5"] == 1.0 and res["by_binarization"]["adaptive"]["oracle"]["auc"] > 0.97
    assert 0 <= res["ciou_at_0.5"] <= 1 and 0 <= res["centre"]["auc"] <= 1
    rows = list(csv.DictReader(open(out / "per_sample.csv")))
    assert len(rows) == 3 and {"model_median", "centre_adaptive", "oracle_median"} <= set(rows[0])
    assert json.loads((out / "localization.json").read_text())["auc"] == res["auc"]


def test_maps_at_the_grid_project_to_the_full_maps_and_long_videos_map_a_segment(run, tmp_path, capsys):
    """similarity.npy with geometry.json gives back, through grid_to_frame and normalize_maps, the maps --maps full
    keeps at the frame's size (uint8); --start/--duration map a segment; --maps none keeps pictures only."""
    import torch

    from avssl.localize.heatmap import Geometry, grid_to_frame, normalize_maps

    video = run["test"] / "clip_00002.mp4"
    base = ["localize", "--checkpoint", str(run["ckpt"]), "--video", str(video), "--fps", "4", "--size", "64", "--quiet"]
    assert main([*base, "--maps", "full", "--output-dir", str(tmp_path / "full")]) == 0
    d = tmp_path / "full" / "clip_00002"
    g = json.loads((d / "geometry.json").read_text())
    sim, full = np.load(d / "similarity.npy"), np.load(d / "maps.npy")
    maps = normalize_maps(grid_to_frame(sim, Geometry(g["stride"], g["pad"], g["height"], g["width"]), *g["frame"]),
                          g["norm"])
    assert full.dtype == np.uint8 and full.shape == (6, 64, 96)
    assert np.abs(maps.numpy() * 255 - full.astype(np.float32)).max() <= 1.0
    assert torch.is_tensor(maps)
    assert main([*base, "--start", "0.5", "--duration", "0.5", "--maps", "none", "--output-dir",
                 str(tmp_path / "seg")]) == 0
    d = tmp_path / "seg" / "clip_00002"
    assert json.loads((d / "times.json").read_text()) == [0.5, 0.75] and not (d / "similarity.npy").exists()
    with av.open(str(d / "overlay.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == 2
    assert (d / "poster.png").exists()
    capsys.readouterr()
    assert main([*base, "--start", "9", "--output-dir", str(tmp_path / "past")]) == 1  # nothing to map there
    assert "no map time in [9, " in capsys.readouterr().err


def test_the_page_says_whether_the_maps_listen(run, tmp_path, monkeypatch):
    from avssl.localize import render
    from avssl.localize.heatmap import Localizer
    from avssl.train.checkpoint import pretrained_model

    model, cfg = pretrained_model(run["ckpt"])
    loc = Localizer(model, cfg.data, cfg.localize)
    paths = [str(run["test"] / f"clip_0000{k}.mp4") for k in range(2)]
    summary = render.localize_videos(loc, paths, tmp_path / "out")
    for stem in ("clip_00000", "clip_00001"):
        heard = json.loads((tmp_path / "out" / stem / "info.json").read_text())["listening"]
        assert {"corr_silence", "corr_other", "listens", "verdict"} <= set(heard) and heard["times"] >= 1
        assert heard["other"] == paths[1 - int(stem[-1])] and -1 <= heard["corr_other"] <= 1
    assert summary["listening"]["clip_00000"] == json.loads(
        (tmp_path / "out" / "clip_00000" / "info.json").read_text())["listening"]
    # a model whose maps ignore the sound is told so, in words, on the page
    monkeypatch.setattr(render, "LISTENS_BELOW", -2.0)
    render.localize_videos(loc, paths[:1], tmp_path / "deaf")
    page = (tmp_path / "deaf" / "index.html").read_text()
    assert "they show what the video encoder finds salient, not where the sound comes from" in page


def test_localize_with_nothing_mappable_writes_its_page_and_says_so(run, tmp_path, capsys):
    silent = tmp_path / "in" / "silent.mp4"
    silent.parent.mkdir()
    from avssl.data.encode import write_av

    write_av(silent, [np.zeros((32, 48, 3), np.uint8)] * 8, 8)
    (tmp_path / "in" / "text.mp4").write_text("not a video")
    out = tmp_path / "not" / "yet" / "there"
    rc = main(["localize", "--checkpoint", str(run["ckpt"]), "--video", str(tmp_path / "in"), "--size", "64",
               "--output-dir", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and (out / "index.html").exists() and "Skipped (2)" in (out / "index.html").read_text()
    assert err[-1].startswith("avssl localize: none of the 2 input(s) could be mapped") and len(err) == 3


def test_jet_runs_from_blue_to_red():
    c = jet(np.array([0.0, 0.5, 1.0]))
    assert tuple(c[0]) == (0, 0, 128) and tuple(c[1]) == (128, 255, 128) and tuple(c[2]) == (128, 0, 0)


@pytest.mark.slow
def test_the_page_plays_in_a_headless_browser(run, tmp_path):
    """Debian's chromium (`apt-get install chromium`): the page loads, its images decode and its videos
    have a duration."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    out = tmp_path / "out"
    assert main(["localize", "--checkpoint", str(run["ckpt"]), "--video", str(run["test"]), "--fps", "4",
                 "--size", "64", "--output-dir", str(out), "--quiet"]) == 0
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-quic",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom",
             (out / "index.html").as_uri()],
            capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-videos="3"' in body and 'data-ready="3"' in body and 'data-images="3"' in body
    durations = [float(x) for x in re.findall(r'data-duration="([0-9.]+)"', dom)]
    assert len(durations) == 3 and all(abs(x - 1.5) < 0.2 for x in durations)


def test_localize_goes_on_past_a_broken_file_and_says_why(run, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(run["test"] / "clip_00000.mp4", folder / "good.mp4")
    (folder / "broken.mp4").write_bytes(b"not a video")
    rc = main(["localize", "--checkpoint", str(run["ckpt"]), "--video", str(folder), "--fps", "2", "--size", "64",
               "--output-dir", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert rc == 0 and summary["videos"] == 1
    assert len(summary["failed"]) == 1 and summary["failed"][0]["path"].endswith("broken.mp4")
    assert "skipped" in captured.err and "broken.mp4" in captured.err
    assert (tmp_path / "out" / "good" / "similarity.npy").exists()
    page = (tmp_path / "out" / "index.html").read_text()
    assert "Skipped (1)" in page and "broken.mp4" in page  # the page lists what it left out, and why


@pytest.mark.parametrize("command", [["localize", "--video", "x.mp4"],
                                     ["evaluate", "localization", "--annotations", "a.json", "--media", "."],
                                     ["evaluate", "retrieval", "--data", "."]])
def test_set_keys_a_command_ignores_are_errors(run, tmp_path, capsys, command):
    # the model comes from the checkpoint: only data.* keys act, anything else is named, not ignored
    rc = main([*command, "--checkpoint", str(run["ckpt"]), "--output-dir", str(tmp_path),
               "--set", "model.embed_dim=64"])
    err = capsys.readouterr().err
    assert rc == 2 and "--set model.embed_dim has no effect" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["...mp4", "..mp4", "-a.mp4", "new\nline.mp4", "clip #1?%.mp4"])
def test_outputs_stay_in_the_output_folder_and_the_page_links_work(run, tmp_path, capsys, name):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(run["test"] / "clip_00000.mp4", src / name)
    out = tmp_path / "deep" / "out"
    assert main(["localize", "--checkpoint", str(run["ckpt"]), "--video", str(src / name), "--fps", "2",
                 "--size", "64", "--output-dir", str(out), "--quiet"]) == 0
    written = [p for p in (tmp_path / "deep").rglob("*") if p.is_file()]
    assert written and all(out in p.parents for p in written), written
    page = (out / "index.html").read_text()
    from urllib.parse import unquote

    links = [unquote(x) for x in re.findall(r'(?:src|href)="([^"]+)"', page)]
    assert len(links) >= 4 and all((out / link).exists() for link in links), links


@pytest.mark.parametrize("argv, message", [
    (["localize", "--checkpoint", "nowhere.pt", "--video", "x.mp4"], "--checkpoint nowhere.pt: no such checkpoint file"),
    (["localize", "--checkpoint", "CKPT", "--video", "nowhere.mp4"], "--video nowhere.mp4: no such file"),
    (["localize", "--checkpoint", "CKPT", "--video", "VIDEO", "--smooth", "4"], "localize.smooth"),
    (["localize", "--checkpoint", "CKPT", "--video", "VIDEO", "--smooth", "0"], "localize.smooth"),
    (["localize", "--checkpoint", "CKPT", "--video", "VIDEO", "--batch-size", "0"], "localize.batch_size"),
    (["localize", "--checkpoint", "CKPT", "--video", "VIDEO", "--last-stride", "2"], "trained at stride 1"),
    (["localize", "--checkpoint", "VIDEO", "--video", "VIDEO"], "--checkpoint"),
    (["pretrain", "--set", "data.root=nowhere/"], "data.root: no such folder"),
    (["pretrain", "--set", "data.root=ROOT", "--set", "optim.batch_size=0"], "optim.batch_size"),
])
def test_command_mistakes_end_with_one_line_and_status_2(run, tmp_path, capsys, argv, message):
    fill = {"CKPT": str(run["ckpt"]), "VIDEO": str(run["test"] / "clip_00000.mp4"), "ROOT": str(run["test"])}
    argv = [fill.get(a, a.replace("ROOT", fill["ROOT"])) for a in argv] + ["--output-dir", str(tmp_path / "o")]
    if argv[0] == "pretrain":
        argv += ["--config", str(CONFIG)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert err.startswith("avssl") and not err.startswith("avssl: avssl"), err  # the command named once


def test_summaries_are_computed_from_unrounded_cious(run, tmp_path, monkeypatch):
    import avssl.localize.evaluate as ev
    from avssl.data.formats.localization import read_localization
    from avssl.localize.heatmap import Localizer
    from avssl.train.checkpoint import pretrained_model

    model, cfg = pretrained_model(run["ckpt"])
    monkeypatch.setattr(ev, "ciou", lambda pred, gt: 0.49999996)  # a hair under 0.5 (possible on large frames)
    data = read_localization("vggss", run["test"] / "vggss.json", run["test"])
    res = ev.evaluate_localization(Localizer(model, cfg.data, cfg.localize), data, ["median"], tmp_path)
    assert res["ciou_at_0.5"] == 0.0 and res["binarize_rule"].startswith("pixels > the value")
    rows = list(csv.DictReader(open(tmp_path / "per_sample.csv")))
    assert rows[0]["model_median"] == "0.5"  # rounded for display only
    listen = res["listening"]
    assert {"ciou_drop_mismatched", "own_sound_more_mass_on_object", "true_beats_mismatched_cosine",
            "slavc_extended"} <= set(listen)
    assert listen["slavc_extended"]["positives"] == 2 and listen["slavc_extended"]["negatives"] == 1


def _short_sound(src: Path, out: Path, keep: float) -> Path:
    """``src`` with its audio track cut after ``keep`` seconds (the frames go on): a real video whose last seconds
    have no sound."""
    from avssl.data.decode import decode_audio, decode_frames, probe
    from avssl.data.encode import write_av

    info = probe(src)
    frames = decode_frames(src, np.arange(int(round(info.duration * 8))) / 8)
    wave = decode_audio(src, 0.0, keep, 16000).waveform
    write_av(out, list(frames), 8, wave[None], 16000)
    return out


def test_maps_of_times_without_sound_are_marked_and_the_notes_are_on_the_page(run, tmp_path, capsys):
    """A video whose sound ends early: the page says in seconds where it has none, the maps there are not shown
    as maps, and beside a 'listens' verdict it says that listening is not pointing at the right place."""
    from avssl.localize.render import no_sound

    src = tmp_path / "in"
    src.mkdir()
    video = _short_sound(run["test"] / "clip_00000.mp4", src / "short.mp4", 0.4)
    out = tmp_path / "out"
    assert main(["localize", "--checkpoint", str(run["ckpt"]), "--video", str(video), "--fps", "4", "--size", "64",
                 "--output-dir", str(out), "--quiet"]) == 0
    info = json.loads((out / "short" / "info.json").read_text())
    ends = [n for n in info["notes"] if n.startswith("the last ")]
    assert ends and re.match(r"the last 1\.\d\d s have no sound \(the audio of .* ends at 0\.\d\d s of 1\.50 s\)",
                             ends[0]) and "samples" not in " ".join(info["notes"])
    assert info["no_sound_times"] and info["no_sound_times"][-1] == 1.25
    page = (out / "index.html").read_text()
    assert "have no sound" in page and "marked &#x27;no sound&#x27;" in page
    frames = []
    with av.open(str(out / "short" / "overlay.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    last = frames[-1].astype(np.float32)
    assert np.abs(last[..., 0] - last[..., 2]).mean() < 8  # grey: no JET colours on a time without sound
    assert no_sound(np.zeros((40, 60, 3), np.uint8)).shape == (40, 60, 3)
    listens = '<p class="meta"><b>Does the map listen?</b> The maps change'
    if listens in page:
        assert "Listening is not pointing at the right place" in page


def test_a_stopped_localize_keeps_whole_videos_only_and_goes_on(run, tmp_path, capsys, monkeypatch):
    from avssl.localize import render

    out = tmp_path / "out"
    argv = ["localize", "--checkpoint", str(run["ckpt"]), "--video", str(run["test"]), "--fps", "4", "--size", "64",
            "--output-dir", str(out), "--quiet"]
    real, calls = render.listening, []

    def stopped_on_the_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second video's files are being written
        return real(*a, **k)

    monkeypatch.setattr(render, "listening", stopped_on_the_second)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert "interrupted while mapping" in err[-1] and "1 of 3 videos done and kept" in err[-1]
    assert "Traceback" not in "".join(err) and "nothing saved" not in err[-1]
    assert sorted(p.name for p in out.iterdir()) == ["clip_00000", "index.html"]  # no half-written folder
    monkeypatch.setattr(render, "listening", real)
    kept = (out / "clip_00000" / "overlay.mp4").stat().st_mtime_ns
    assert main(argv) == 0
    assert "already mapped in" in capsys.readouterr().err
    assert (out / "clip_00000" / "overlay.mp4").stat().st_mtime_ns == kept  # not mapped again
    assert json.loads((out / "clip_00000" / "info.json").read_text())["made_by"]["model_sha256"]


def test_maps_made_earlier_in_the_folder_stay_on_its_page(run, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["localize", "--checkpoint", str(run["ckpt"]), "--fps", "4", "--size", "64", "--output-dir", str(out),
            "--quiet"]
    assert main([*base, "--video", str(run["test"] / "clip_00000.mp4")]) == 0
    assert main([*base, "--video", str(run["test"] / "clip_00001.mp4"), "--fps", "2"]) == 0
    page = (out / "index.html").read_text()
    assert 'id="clip_00000"' in page and 'id="clip_00001"' in page
