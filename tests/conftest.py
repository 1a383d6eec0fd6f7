"""Shared fixtures: small media generated on the fly (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avssl.data.synthetic import SynthSpec, synthesize
from avssl.data.encode import write_av

EVENT_TIME = 2.0  # the flash and the click of `event_video`


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
