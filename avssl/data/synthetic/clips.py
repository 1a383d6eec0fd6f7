"""Procedural audio-visual media with ground truth, for tests, the demo and localization checks.

Each clip shows one *sounding* object of a class (shape, colour, texture) that pulses in size with
its own sound (timbre, pitch, rhythm), plus silent distractor objects of other classes, all moving
and bouncing off the borders over a noisy background. Clips are real H.264/AAC MP4 files with a JSON
of ground truth beside them: the class, and the sounding object's box on every frame.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..encode import write_av
from ...progress import track

__all__ = ["CLASSES", "SoundClass", "SynthSpec", "class_sound", "envelope", "generate_clip", "object_mask",
           "object_texture", "synthesize"]


@dataclass(frozen=True)
class SoundClass:
    name: str
    shape: str  # circle, square, triangle, diamond, ring, cross
    color: tuple[int, int, int]
    texture: str  # solid, stripes, checker
    sound: str  # sine, square, chirp, noise, bell, fm
    pitch: float  # Hz
    rhythm: float  # pulses per second


CLASSES: tuple[SoundClass, ...] = (
    SoundClass("red_circle", "circle", (230, 40, 40), "solid", "sine", 440.0, 3.0),
    SoundClass("green_square", "square", (40, 210, 60), "stripes", "square", 220.0, 2.0),
    SoundClass("blue_triangle", "triangle", (50, 90, 240), "checker", "chirp", 700.0, 1.5),
    SoundClass("yellow_diamond", "diamond", (235, 220, 40), "solid", "noise", 3000.0, 5.0),
    SoundClass("magenta_ring", "ring", (220, 50, 220), "solid", "bell", 880.0, 1.0),
    SoundClass("cyan_cross", "cross", (40, 220, 220), "stripes", "fm", 330.0, 4.0),
)


@dataclass(frozen=True)
class SynthSpec:
    width: int = 128
    height: int = 128
    fps: int = 25
    duration: float = 3.0
    sample_rate: int = 22050
    num_distractors: int = 1
    num_classes: int = len(CLASSES)
    gop: int = 25  # keyframe spacing in frames


# ---------------------------------------------------------------------------------------------
# Sounding objects


def envelope(t: np.ndarray, rhythm: float, phase: float, decay: float = 0.12) -> np.ndarray:
    period = 1.0 / rhythm
    since = np.mod(t - phase * period, period)
    return np.exp(-since / decay) * np.minimum(1.0, since / 0.005)


def class_sound(cls: SoundClass, t: np.ndarray, rng: np.random.Generator, pitch_jitter: float) -> np.ndarray:
    f = cls.pitch * pitch_jitter
    if cls.sound == "sine":
        return np.sin(2 * np.pi * f * t)
    if cls.sound == "square":
        return 0.6 * np.sign(np.sin(2 * np.pi * f * t))
    if cls.sound == "chirp":
        sweep = np.mod(t * cls.rhythm, 1.0)  # rises over each pulse
        inst = f * (1.0 + sweep)
        return np.sin(2 * np.pi * np.cumsum(inst) / (1.0 / (t[1] - t[0])))
    if cls.sound == "noise":
        n = rng.standard_normal(t.shape)
        return 0.5 * np.diff(n, prepend=0.0)  # high-passed noise, a hi-hat
    if cls.sound == "bell":
        return sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2.76, 5.4)) / 1.8
    if cls.sound == "fm":
        return np.sin(2 * np.pi * f * t + 3.0 * np.sin(2 * np.pi * 0.5 * f * t))
    raise ValueError(f"unknown sound {cls.sound!r}")


def object_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r
    if shape == "triangle":
        return (dy <= 0.8 * r) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "ring":
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
    if shape == "cross":
        a, b = np.abs(dx), np.abs(dy)
        return ((a <= r / 3) & (b <= r)) | ((b <= r / 3) & (a <= r))
    raise ValueError(f"unknown shape {shape!r}")


def object_texture(texture: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    if texture == "stripes":
        return 0.65 + 0.35 * (np.sin(dx * 6.0 / max(r, 1.0) * np.pi) > 0)
    if texture == "checker":
        k = max(r / 2.5, 1.0)
        return 0.6 + 0.4 * ((np.floor(dx / k) + np.floor(dy / k)) % 2)
    return np.ones_like(dx)


@dataclass
class _Obj:
    cls: SoundClass
    x: float
    y: float
    vx: float
    vy: float
    r: float


def generate_clip(index: int, seed: int, spec: SynthSpec = SynthSpec()) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """Frames, mono audio and ground truth of clip ``index`` (deterministic in ``(seed, index)``)."""
    rng = np.random.default_rng([seed, index])
    classes = CLASSES[: spec.num_classes]
    label = int(rng.integers(len(classes)))
    others = [k for k in range(len(classes)) if k != label]
    distractors = rng.choice(others, size=min(spec.num_distractors, len(others)), replace=False)
    w, h, fps = spec.width, spec.height, spec.fps
    n_frames = int(round(spec.duration * fps))
    base_r = 0.14 * min(w, h)

    def make(k: int) -> _Obj:
        r = base_r * rng.uniform(0.85, 1.15)
        speed = rng.uniform(0.15, 0.45) * min(w, h)  # pixels per second
        ang = rng.uniform(0, 2 * np.pi)
        return _Obj(classes[k], rng.uniform(r, w - r), rng.uniform(r, h - r),
                    speed * np.cos(ang), speed * np.sin(ang), r)

    objs = [make(label)] + [make(int(k)) for k in distractors]
    phase = rng.uniform(0, 1)
    pitch_jitter = rng.uniform(0.94, 1.06)
    bg = rng.uniform(20, 70, size=3)
    bg_noise = rng.normal(0, 6, size=(h, w, 1))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    frames, boxes, distractor_boxes = [], [], []
    for i in range(n_frames):
        t = i / fps
        img = np.broadcast_to(bg, (h, w, 3)) + bg_noise
        img = img.copy()
        pulse = 1.0 + 0.35 * float(envelope(np.array([t]), objs[0].cls.rhythm, phase)[0])
        frame_boxes = []
        # Distractors first, the sounding object on top (its box is the visible ground truth).
        for j, o in reversed(list(enumerate(objs))):
            r = o.r * (pulse if j == 0 else 1.0)
            dx, dy = xx - o.x, yy - o.y
            m = object_mask(o.cls.shape, dx, dy, r)
            shade = object_texture(o.cls.texture, dx, dy, r)
            img[m] = np.asarray(o.cls.color, np.float32) * shade[m][:, None]
            ys, xs = np.nonzero(m)
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
            frame_boxes.append((j, box))
        frame_boxes.sort()
        boxes.append(frame_boxes[0][1])
        distractor_boxes.append([b for _, b in frame_boxes[1:]])
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
        for o in objs:  # move and bounce
            o.x += o.vx / fps
            o.y += o.vy / fps
            if not o.r <= o.x <= w - o.r:
                o.vx = -o.vx
                o.x = float(np.clip(o.x, o.r, w - o.r))
            if not o.r <= o.y <= h - o.r:
                o.vy = -o.vy
                o.y = float(np.clip(o.y, o.r, h - o.r))

    sr = spec.sample_rate
    ta = np.arange(int(round(spec.duration * sr))) / sr
    env = envelope(ta, objs[0].cls.rhythm, phase)
    audio = 0.5 * env * class_sound(objs[0].cls, ta, rng, pitch_jitter) + 0.003 * rng.standard_normal(ta.shape)
    truth = {
        "label": label,
        "class_name": objs[0].cls.name,
        "distractors": [classes[int(k)].name for k in distractors],
        "fps": fps,
        "width": w,
        "height": h,
        "duration": spec.duration,
        "sample_rate": sr,
        "boxes": boxes,  # sounding object, [x0, y0, x1, y1] in pixels, one per frame
        "distractor_boxes": distractor_boxes,
        "seed": seed,
        "index": index,
    }
    return frames, audio.astype(np.float32), truth


def _write_one(args: tuple[str, int, int, SynthSpec]) -> str:
    out_dir, index, seed, spec = args
    frames, audio, truth = generate_clip(index, seed, spec)
    stem = Path(out_dir) / f"clip_{index:05d}"
    write_av(stem.with_suffix(".mp4"), frames, spec.fps, audio[None], spec.sample_rate, gop=spec.gop)
    stem.with_suffix(".json").write_text(json.dumps(truth))
    return str(stem.with_suffix(".mp4"))


def synthesize(
    output_dir: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    spec: SynthSpec = SynthSpec(),
    workers: int = 1,
    progress: bool = False,
) -> list[str]:
    """Write ``num_clips`` clips (MP4 + JSON ground truth) and ``classes.json``; return the MP4 paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = [asdict(c) for c in CLASSES[: spec.num_classes]]
    (out / "classes.json").write_text(json.dumps({"classes": classes, "spec": asdict(spec), "seed": seed}, indent=1))
    jobs = [(str(out), i, seed, spec) for i in range(num_clips)]
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            paths = list(track(ex.map(_write_one, jobs), total=len(jobs), enabled=progress, desc="synth"))
    else:
        paths = [_write_one(j) for j in track(jobs, enabled=progress, desc="synth")]
    return paths
