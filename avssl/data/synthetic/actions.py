"""A labeled synthetic action set in the UCF-101 layout, for fine-tuning tests and the README's proof.

Each class is a motion with its own sound: a textured disk slides right, left, down or up (wrapping around
the frame) while a tone sweeps up, sweeps down, beats fast or beats slowly. The disk's colour, texture phase,
speed, start and the tone's base pitch are random per clip and independent of the class, so a single frame
cannot tell the classes apart: telling them needs motion (or the sound); mirroring swaps SlideLeft and
SlideRight, so horizontal-flip augmentation must be off for this set. Written as AVI files (MPEG-4 part 2
video and PCM audio, as UCF-101's Xvid AVIs) under ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` with
``ucfTrainTestlist/`` (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``; split N tests the groups
with ``(group - 1) % 3 == N - 1``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..encode import write_av

__all__ = ["ACTIONS", "ActionSpec", "synthesize_actions"]

ACTIONS = ("SlideRight", "SlideLeft", "SlideDown", "SlideUp")
_DIRECTIONS = {"SlideRight": (1, 0), "SlideLeft": (-1, 0), "SlideDown": (0, 1), "SlideUp": (0, -1)}


@dataclass(frozen=True)
class ActionSpec:
    width: int = 64
    height: int = 64
    fps: int = 16
    duration: float = 3.0
    sample_rate: int = 16000
    groups: int = 6  # clips of a class are spread over groups; splits hold out a third of the groups


def _frames(rng: np.random.Generator, action: str, spec: ActionSpec) -> list[np.ndarray]:
    h, w = spec.height, spec.width
    dx, dy = _DIRECTIONS[action]
    speed = rng.uniform(1.0, 1.5) * min(h, w) / spec.duration  # pixels per second
    x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
    color = rng.integers(60, 256, 3)
    phase = rng.uniform(0, 2 * np.pi)
    r = 0.18 * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    background = (rng.integers(0, 40, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]).astype(np.uint8)
    out = []
    for i in range(round(spec.duration * spec.fps)):
        t = i / spec.fps
        cx, cy = (x0 + dx * speed * t) % w, (y0 + dy * speed * t) % h
        # distances on the torus, so the disk wraps around the edges
        ddx = np.minimum(np.abs(xx - cx), w - np.abs(xx - cx))
        ddy = np.minimum(np.abs(yy - cy), h - np.abs(yy - cy))
        disk = ddx**2 + ddy**2 < r**2
        img = background.copy()
        stripes = 0.75 + 0.25 * np.sin(0.9 * (xx + yy) + phase)  # texture fixed to the frame, not the disk
        img[disk] = (color[None, :] * stripes[disk][:, None]).astype(np.uint8)
        out.append(img)
    return out


def _sound(rng: np.random.Generator, action: str, spec: ActionSpec) -> np.ndarray:
    t = np.arange(round(spec.duration * spec.sample_rate)) / spec.sample_rate
    base = rng.uniform(300, 600)
    if action in ("SlideRight", "SlideLeft"):  # a tone sweeping up or down an octave, repeated every second
        frac = (t % 1.0) if action == "SlideRight" else 1.0 - (t % 1.0)
        freq = base * 2**frac
        wave = np.sin(2 * np.pi * np.cumsum(freq) / spec.sample_rate)
    else:  # beats of a steady tone, fast or slow
        rate = 6.0 if action == "SlideDown" else 2.0
        env = np.exp(-((t * rate) % 1.0) * 8)
        wave = env * np.sin(2 * np.pi * base * t)
    return (0.4 * wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def synthesize_actions(output_dir: str | os.PathLike, clips_per_class: int = 12, seed: int = 0,
                       spec: ActionSpec = ActionSpec()) -> Path:
    """Write the set and its split lists under ``output_dir``; returns the ``UCF-101`` folder."""
    out = Path(output_dir)
    videos, lists = out / "UCF-101", out / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {a}\n" for i, a in enumerate(ACTIONS)))
    rows: list[tuple[str, int, int]] = []
    for label, action in enumerate(ACTIONS):
        (videos / action).mkdir(parents=True, exist_ok=True)
        for k in range(clips_per_class):
            group, clip = k % spec.groups + 1, k // spec.groups + 1
            rel = f"{action}/v_{action}_g{group:02d}_c{clip:02d}.avi"
            rng = np.random.default_rng([seed, label, k])
            write_av(videos / rel, _frames(rng, action, spec), spec.fps, _sound(rng, action, spec)[None],
                     spec.sample_rate, video_codec="mpeg4", audio_codec="pcm_s16le")
            rows.append((rel, label + 1, group))
    for split in (1, 2, 3):
        test = [r for r in rows if (r[2] - 1) % 3 == split - 1]
        train = [r for r in rows if (r[2] - 1) % 3 != split - 1]
        (lists / f"trainlist0{split}.txt").write_text("".join(f"{rel} {lbl}\n" for rel, lbl, _ in train))
        (lists / f"testlist0{split}.txt").write_text("".join(f"{rel}\n" for rel, _, _ in test))
    return videos
