from __future__ import annotations

import json

import numpy as np

from avssl.data.decode import decode_clip, probe
from avssl.data.synthetic import CLASSES, SynthSpec, generate_clip, synthesize


def test_generation_is_deterministic_from_the_seed():
    spec = SynthSpec(width=64, height=48, duration=1.0)
    f1, a1, t1 = generate_clip(4, 11, spec)
    f2, a2, t2 = generate_clip(4, 11, spec)
    f3, _, t3 = generate_clip(4, 12, spec)
    assert all(np.array_equal(x, y) for x, y in zip(f1, f2)) and np.array_equal(a1, a2) and t1 == t2
    assert not all(np.array_equal(x, y) for x, y in zip(f1, f3))


def test_ground_truth_boxes_and_sound():
    spec = SynthSpec(width=80, height=64, duration=2.0, fps=20)
    frames, audio, truth = generate_clip(0, 0, spec)
    assert len(frames) == len(truth["boxes"]) == 40 and frames[0].shape == (64, 80, 3)
    assert truth["class_name"] == CLASSES[truth["label"]].name
    color = np.array(CLASSES[truth["label"]].color)
    for img, (x0, y0, x1, y1) in zip(frames, truth["boxes"]):
        assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 64
        # The sounding object's colour dominates inside its box.
        patch = img[y0:y1, x0:x1].reshape(-1, 3).astype(float)
        near = np.linalg.norm(patch / np.maximum(patch.max(1, keepdims=True), 1) - color / color.max(), axis=1) < 0.5
        assert near.mean() > 0.3
    assert audio.shape == (2 * spec.sample_rate,) and np.abs(audio).max() > 0.1


def test_synthesize_writes_decodable_clips(synth_dir):
    classes = json.loads((synth_dir / "classes.json").read_text())
    assert len(classes["classes"]) == len(CLASSES)
    mp4s = sorted(synth_dir.glob("clip_*.mp4"))
    assert len(mp4s) == 6
    info = probe(mp4s[0])
    assert (info.video.width, info.video.height, info.video.fps) == (96, 80, 20)
    assert info.audio.codec == "aac"
    truth = json.loads(mp4s[0].with_suffix(".json").read_text())
    assert len(truth["boxes"]) == 40
    clip = decode_clip(mp4s[0], 0.5, 0.5, 16, 64, 1.0, 16000)
    assert clip.frames.shape == (8, 64, 77, 3) and np.abs(clip.waveform).max() > 0.05


def test_synthesized_files_are_byte_identical_serial_or_parallel(tmp_path):
    # Before x264 was pinned to one thread without lookahead, about 1 in 10 files differed between runs.
    spec = SynthSpec(width=80, height=80, fps=16, duration=3.0, sample_rate=16000, num_distractors=0)
    a = synthesize(tmp_path / "a", 12, seed=0, spec=spec, workers=1)
    b = synthesize(tmp_path / "b", 12, seed=0, spec=spec, workers=2)
    for x, y in zip(a, b):
        assert open(x, "rb").read() == open(y, "rb").read(), x
        assert open(x.replace(".mp4", ".json")).read() == open(y.replace(".mp4", ".json")).read()


def test_action_set_in_the_ucf101_layout(tmp_path):
    from avssl.data.decode import decode_clip
    from avssl.data.formats import read_ucf101
    from avssl.data.synthetic.actions import ACTIONS, ActionSpec, synthesize_actions

    videos = synthesize_actions(tmp_path, clips_per_class=6, seed=1, spec=ActionSpec(duration=2.0))
    lists = tmp_path / "ucfTrainTestlist"
    everything = {str(p) for p in videos.rglob("*.avi")}
    assert len(everything) == 24
    for split in (1, 2, 3):
        train, test = read_ucf101(lists, videos, split, "train"), read_ucf101(lists, videos, split, "test")
        assert train.classes == list(ACTIONS) and not train.missing and not test.missing
        tr, te = {e["path"] for e in train.entries}, {e["path"] for e in test.entries}
        assert not tr & te and tr | te == everything and len(te) == 8  # a third of the groups held out
    clip = decode_clip(sorted(everything)[0], 0.5, 0.5, 8, 64, 1.0, 16000)
    assert clip.frames.shape == (4, 64, 64, 3) and clip.has_audio and clip.waveform.std() > 0.05
    # the disk moves between frames (the class is in the motion)
    assert np.abs(clip.frames[0].astype(int) - clip.frames[-1].astype(int)).mean() > 1
