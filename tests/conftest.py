"""Shared fixtures: small media generated on the fly (no downloads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from avssl.data.synthetic import SynthSpec, synthesize
from avssl.data.encode import write_av

EVENT_TIME = 2.0  # the flash and the click of `event_video`
SMALL_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "avid_small_cpu.yaml"


def event_media(
    path: Path,
    *,
    duration: float = 4.0,
    fps: int = 30,
    sample_rate: int = 44100,
    channels: int = 1,
    event: float = EVENT_TIME,
    size: tuple[int, int] = (48, 64),
    video_start: float = 0.0,
    audio_start: float = 0.0,
    with_video: bool = True,
    with_audio: bool = True,
    **kwargs,
) -> Path:
    """A dark video that turns white at ``event`` (for 0.25 s) with a click at the same instant.

    Streams starting late (``video_start``/``audio_start``) hold the content of the shared clock,
    so the flash and the click stay at ``event`` seconds on the container's clock.
    """
    h, w = size
    frames = None
    if with_video:
        n = int(round((duration - video_start) * fps))
        times = video_start + np.arange(n) / fps
        bright = (times >= event - 1e-9) & (times < event + 0.25)
        frames = [np.full((h, w, 3), 235 if b else 16, np.uint8) for b in bright]
    audio = None
    if with_audio:
        n = int(round((duration - audio_start) * sample_rate))
        audio = np.zeros((channels, n), np.float32)
        k = int(round((event - audio_start) * sample_rate))
        audio[:, k : k + int(0.003 * sample_rate)] = 0.8
    write_av(path, frames, fps, audio, sample_rate, video_start=video_start, audio_start=audio_start, **kwargs)
    return path


def flash_time(frames: np.ndarray, frame_times: np.ndarray) -> float:
    bright = frames.reshape(len(frames), -1).mean(axis=1) > 128
    assert bright.any(), "flash not found in the clip"
    return float(frame_times[int(np.argmax(bright))])


def click_time(wave: np.ndarray, audio_start: float, sample_rate: int) -> float:
    loud = np.abs(wave) > 0.25 * np.abs(wave).max()
    assert np.abs(wave).max() > 0.1, "click not found in the clip"
    return audio_start + int(np.argmax(loud)) / sample_rate


@pytest.fixture
def event_video(tmp_path: Path) -> Path:
    return event_media(tmp_path / "event.mp4")


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, 6, seed=3, spec=SynthSpec(width=96, height=80, duration=2.0, fps=20))
    return out


def small_collection(d: Path, clips: int, seed: int, **spec) -> Path:
    """``clips`` synthetic clips (``SynthSpec(**spec)``) in ``d/media`` and their manifest ``d/m.jsonl``."""
    from avssl.data.collection import build_manifest

    synthesize(d / "media", clips, seed=seed, spec=SynthSpec(**spec))
    build_manifest(d / "media", d / "m.jsonl", progress=False)
    return d / "m.jsonl"


def train_small(manifest: Path, out: Path, *overrides: str) -> Path:
    """``avid_small_cpu.yaml`` pretrained on ``manifest`` into ``out`` on the CPU, quietly and without evaluation
    (then ``overrides``): ``out/last.pt``."""
    from avssl.config import load_config
    from avssl.train.pretrain import PretrainConfig, pretrain

    pretrain(load_config(PretrainConfig, SMALL_CONFIG, [f"data.manifest={manifest}", "run.progress=false",
                                                        "run.device=cpu", "eval.every=0", *overrides]), out)
    return out / "last.pt"


def make_ucf_layout(d: Path) -> Path:
    """Synthetic clips in the UCF-101 layout: classes from the generator's ground truth, split lists."""
    synthesize(d / "synth", 18, seed=5, spec=SynthSpec(width=64, height=64, fps=16, duration=1.5, sample_rate=16000,
                                                        num_distractors=0))
    lists = d / "ucfTrainTestlist"
    lists.mkdir()
    by_class: dict[str, list[Path]] = {}
    for meta in sorted((d / "synth").glob("clip_*.json")):
        info = json.loads(meta.read_text())
        by_class.setdefault(info["class_name"], []).append(meta.with_suffix(".mp4"))
    classes = sorted(by_class)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    train, test = [], []
    for i, c in enumerate(classes):
        for g, src in enumerate(by_class[c]):
            rel = f"{c}/v_{c}_g{g + 1:02d}_c01.mp4"
            (d / "UCF-101" / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, d / "UCF-101" / rel)
            (test if g == 0 else train).append((rel, i + 1))
    train.append((f"{classes[0]}/v_gone_g01_c01.mp4", 1))  # listed but missing
    (lists / "trainlist01.txt").write_text("".join(f"{r} {lbl}\n" for r, lbl in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r, _ in test))
    return d
