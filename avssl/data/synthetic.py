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
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["CLASSES", "SoundClass", "SynthSpec", "generate_clip", "synthesize", "write_av"]


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


def write_av(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | None,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
    *,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    layout: str | None = None,
    video_start: float = 0.0,
    audio_start: float = 0.0,
    gop: int | None = None,
    crf: int = 18,
    rotation: int = 0,
    container_options: dict[str, str] | None = None,
) -> None:
    """Write RGB uint8 frames (H, W, 3) and float audio (channels, samples) to a media file.

    ``frames=None`` writes an audio-only file. ``video_start``/``audio_start`` offset each stream's
    first timestamp (the container keeps them as stream ``start_time``), which tests use to check
    that clips are cut on the container's clock. ``rotation`` stores a display rotation (degrees).
    """
    with av.open(os.fspath(path), mode="w", options=container_options or {}) as c:
        vs = None
        if frames is not None:
            frames = iter(frames)
            first = next(frames)
            h, w = first.shape[:2]
            rate = Fraction(fps).limit_denominator(1001)
            vs = c.add_stream(video_codec, rate=rate)
            vs.width, vs.height = w, h
            vs.pix_fmt = "yuv420p"
            vs.time_base = 1 / rate
            if video_codec == "libx264":
                # Same frames, same bytes: one encoder thread and no rate-control lookahead (otherwise
                # x264 gave different output run to run here; codec_context.thread_count does not
                # reach it, the "threads" option does).
                params = "rc-lookahead=0" + (f":keyint={gop}:min-keyint={gop}:scenecut=0" if gop else "")
                vs.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "x264-params": params}
            elif gop:
                vs.codec_context.gop_size = gop
            if rotation:
                vs.set_display_rotation(rotation)
        aus = None
        if audio is not None:
            audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
            layout = layout or {1: "mono", 2: "stereo", 6: "5.1"}[audio.shape[0]]
            aus = c.add_stream(audio_codec, rate=sample_rate, layout=layout)
            aus.time_base = Fraction(1, sample_rate)
            fmt = aus.codec_context.codec.audio_formats[0].name if aus.codec_context.codec.audio_formats else "fltp"
            aus.format = fmt
        if vs is not None:
            v0 = int(round(video_start * rate))
            for i, img in enumerate([first, *frames]):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame.pts = v0 + i
                frame.time_base = 1 / rate
                c.mux(vs.encode(frame))
            c.mux(vs.encode(None))
        if aus is not None:
            a0 = int(round(audio_start * sample_rate))
            chunk = aus.codec_context.frame_size or 1024
            for s in range(0, audio.shape[1], chunk):
                frame = _audio_frame(audio[:, s : s + chunk], aus.format.name, layout, sample_rate)
                frame.pts = a0 + s
                frame.time_base = Fraction(1, sample_rate)
                c.mux(aus.encode(frame))
            c.mux(aus.encode(None))


def _audio_frame(x: np.ndarray, fmt: str, layout: str, sample_rate: int) -> av.AudioFrame:
    x = np.clip(x, -1.0, 1.0)
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "s16":
        x = (x * 32767).astype(np.int16)
    elif base == "s32":
        x = (x * 2147483647).astype(np.int32)
    elif base == "dbl":
        x = x.astype(np.float64)
    else:
        x = x.astype(np.float32)
    if not planar:
        x = x.T.reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format=fmt, layout=layout)
    frame.sample_rate = sample_rate
    return frame


# ---------------------------------------------------------------------------------------------
# Sounding objects


def _envelope(t: np.ndarray, rhythm: float, phase: float, decay: float = 0.12) -> np.ndarray:
    period = 1.0 / rhythm
    since = np.mod(t - phase * period, period)
    return np.exp(-since / decay) * np.minimum(1.0, since / 0.005)


def _sound(cls: SoundClass, t: np.ndarray, rng: np.random.Generator, pitch_jitter: float) -> np.ndarray:
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


def _mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
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


def _texture(texture: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
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
        pulse = 1.0 + 0.35 * float(_envelope(np.array([t]), objs[0].cls.rhythm, phase)[0])
        frame_boxes = []
        # Distractors first, the sounding object on top (its box is the visible ground truth).
        for j, o in reversed(list(enumerate(objs))):
            r = o.r * (pulse if j == 0 else 1.0)
            dx, dy = xx - o.x, yy - o.y
            m = _mask(o.cls.shape, dx, dy, r)
            shade = _texture(o.cls.texture, dx, dy, r)
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
    env = _envelope(ta, objs[0].cls.rhythm, phase)
    audio = 0.5 * env * _sound(objs[0].cls, ta, rng, pitch_jitter) + 0.003 * rng.standard_normal(ta.shape)
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
    from tqdm import tqdm

    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            paths = list(tqdm(ex.map(_write_one, jobs), total=len(jobs), disable=not progress, desc="synth"))
    else:
        paths = [_write_one(j) for j in tqdm(jobs, disable=not progress, desc="synth")]
    return paths
