from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
import torchvision.io as tvio

from avssl.data.synthetic.compose import ComposeSpec, compose, compose_clip, load_stamps, synthetic_assets
from avssl.data.decode import decode_clip, probe
from avssl.data.formats.localization import read_vggss
from avssl.data.encode import write_av


def _rgba_png(path, rgba: np.ndarray) -> None:
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=1)
        s.height, s.width = rgba.shape[:2]
        s.pix_fmt = "rgba"
        c.mux(s.encode(av.VideoFrame.from_ndarray(rgba, format="rgba")))
        c.mux(s.encode(None))


SPEC = ComposeSpec(width=96, height=64, fps=8, duration=1.0, distractors=2)


def test_same_seed_same_bytes_and_boxes_match_the_pasted_cut_out(tmp_path):
    a = compose(tmp_path / "a", 3, seed=5, spec=SPEC)
    b = compose(tmp_path / "b", 3, seed=5, spec=SPEC)
    c = compose(tmp_path / "c", 3, seed=6, spec=SPEC)
    for pa, pb in zip(a, b):
        assert open(pa, "rb").read() == open(pb, "rb").read()
    assert (tmp_path / "a" / "vggss.json").read_text() == (tmp_path / "b" / "vggss.json").read_text()
    assert open(a[0], "rb").read() != open(c[0], "rb").read()
    info = probe(a[0])
    assert (info.video.width, info.video.height) == (96, 64) and info.audio is not None
    rows = json.loads((tmp_path / "a" / "vggss.json").read_text())
    assert [r["file"] for r in rows] == ["clip_00000", "clip_00001", "clip_00002"]
    assert all(len(r["distractors"]) == 2 and r["class"] not in {d["class"] for d in r["distractors"]} for r in rows)


def test_the_box_is_the_sounding_cut_outs_alpha_and_the_audio_is_its_sound():
    assets = synthetic_assets(16000)
    frames, audio, truth = compose_clip(0, 3, assets, None, ComposeSpec(width=96, height=64, distractors=0))
    x1, y1, x2, y2 = truth["bbox"][0]
    box = (round(y1 * 64), round(y2 * 64), round(x1 * 96), round(x2 * 96))
    kind = next(a for a in assets if a.name == truth["class"])
    colour = np.asarray(kind.rgba[kind.rgba[..., 3] > 127][:, :3].max(axis=0), np.float32)
    diff = np.abs(frames[0].astype(np.float32) - colour).sum(axis=2)
    ys, xs = np.nonzero(diff < 60)  # pixels of the cut-out's brightest colour
    assert len(ys) and ys.min() >= box[0] and ys.max() < box[1] and xs.min() >= box[2] and xs.max() < box[3]
    assert len(audio) == 3 * 16000 and np.abs(audio).max() == pytest.approx(0.5, abs=0.01)


def test_stamps_with_their_sounds_and_photo_backgrounds(tmp_path):
    stamps, bgs = tmp_path / "stamps", tmp_path / "bg"
    (stamps / "animals").mkdir(parents=True)
    bgs.mkdir()
    for k, name in enumerate(["cat", "dog", "cow"]):
        rgba = np.zeros((40, 30, 4), np.uint8)
        rgba[5:35, 5:25] = [200, 50 * k, 20, 255]
        _rgba_png(stamps / "animals" / f"{name}.png", rgba)
        t = np.arange(8000) / 16000
        write_av(stamps / "animals" / f"{name}.wav", None, 16, (0.4 * np.sin(2 * np.pi * 300 * (k + 1) * t))[None],
                 16000, audio_codec="pcm_s16le")
    _rgba_png(stamps / "no_sound.png", np.zeros((10, 10, 4), np.uint8))  # no sound beside it: ignored
    photo = np.random.default_rng(0).integers(0, 255, (3, 50, 80), dtype=np.uint8)
    tvio.write_jpeg(torch.from_numpy(photo), str(bgs / "field.jpg"))
    assets = load_stamps(stamps, 16000)
    assert [a.name for a in assets] == ["animals/cat", "animals/cow", "animals/dog"]
    assert [a.name for a in load_stamps(stamps, 16000, kinds=2)] == ["animals/cat", "animals/dog"]
    paths = compose(tmp_path / "out", 2, seed=0, stamps=stamps, backgrounds=bgs,
                    spec=ComposeSpec(width=80, height=60, fps=8, duration=1.0, distractors=1))
    data = read_vggss(tmp_path / "out" / "vggss.json", tmp_path / "out")
    assert len(data.samples) == 2 and not data.missing and data.samples[0].video == paths[0]
    clip = decode_clip(paths[0], 0.25, 0.25, 8, audio_duration=0.5, sample_rate=16000)
    assert np.abs(clip.waveform).max() > 0.2  # the stamp's sound
    with pytest.raises(FileNotFoundError, match="NAME.ogg"):
        load_stamps(bgs, 16000)


def test_placement_scale_and_balanced_kinds(tmp_path):
    from collections import Counter

    def centres(name: str, **kw) -> np.ndarray:
        spec = ComposeSpec(width=64, height=48, fps=4, duration=0.5, **kw)
        compose(tmp_path / name, 24, seed=5, spec=spec, kinds=4)
        rows = json.loads((tmp_path / name / "vggss.json").read_text())
        return rows, np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in (r["bbox"][0] for r in rows)])

    _, middle = centres("centre", placement="centre", scale=(0.2, 0.3))
    _, away = centres("off", placement="off_centre", scale=(0.2, 0.3))
    dist = lambda c: np.abs(c - 0.5).max(1)  # noqa: E731
    assert dist(middle).mean() < 0.15 and (dist(away) > 0.2).mean() > 0.9
    rows, _ = centres("balanced", clips_per_kind=6)
    assert sorted(Counter(r["class"] for r in rows).values()) == [6, 6, 6, 6]
    with pytest.raises(ValueError, match="scale"):
        ComposeSpec(scale=(0.6, 0.3))
