"""A localization benchmark made of real parts: cut-outs that come with their own sound, pasted on photos.

Each clip shows one *sounding* cut-out (an RGBA image whose recording is the clip's audio) and ``K``
silent distractor cut-outs of other kinds, at random positions and scales on a background photo.
The alpha channel gives exact boxes; they are written in VGG-SS's format (``vggss.json``: ``file``,
``class``, ``bbox`` as normalized ``[x1, y1, x2, y2]`` lists), so that ``avssl evaluate localization``
reads a composed set as it reads VGG-SS. Same assets and seed, same bytes.

Assets: a stamps folder in which a cut-out ``NAME.png`` has its sound in ``NAME.ogg`` (or .wav, .flac,
.mp3) beside it, as Tux Paint's stamp collection has (Debian: ``tuxpaint-stamps-default``), and a folder
of background photos (JPEG or PNG). Without them, the synthetic generator's objects and procedural
backgrounds stand in, so tests need no downloads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.io as tvio

from ..collection import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS
from ..decode import DecodeError, decode_audio, probe
from ..encode import write_av
from .clips import CLASSES, class_sound, envelope, object_mask, object_texture
from ...progress import track

__all__ = ["Asset", "ComposeSpec", "compose", "load_backgrounds", "load_stamps", "synthetic_assets"]



@dataclass(frozen=True)
class ComposeSpec:
    width: int = 160
    height: int = 120  # not square on purpose: maps and boxes must follow the frame's own geometry
    fps: int = 16
    duration: float = 3.0
    sample_rate: int = 16000
    distractors: int = 1
    scale: tuple[float, float] = (0.35, 0.55)  # a cut-out's longer side, as a fraction of the frame height
    gop: int = 16
    # where the sounding cut-out goes (distractors: anywhere): "uniform" (any position inside the frame),
    # "centre" (its centre drawn around the frame's, 0.12 of the frame's size apart on average), "off_centre"
    # (its centre outside the frame's central half in both directions' sense: away from the middle)
    placement: Literal["uniform", "centre", "off_centre"] = "uniform"
    clips_per_kind: int | None = None  # balanced kinds: each kind sounds in this many clips (None: drawn at random)

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"scale: 0 < low <= high <= 1 (of the frame's height), got {self.scale}")
        if self.distractors < 0:
            raise ValueError(f"distractors: at least 0, got {self.distractors}")


@dataclass
class Asset:
    """A cut-out: ``rgba`` uint8 (H, W, 4) and its sound, float32 mono at the spec's sample rate."""

    name: str
    rgba: np.ndarray
    sound: np.ndarray


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (h, w, C), antialiased bilinear."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    y = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def load_stamps(folder: str | os.PathLike, sample_rate: int, kinds: int | None = None, offset: int = 0) -> list[Asset]:
    """Every ``NAME.png`` under ``folder`` that has a sound file of the same name beside it (sorted by
    path). ``kinds`` keeps that many, spread evenly over the sorted list (independent of any seed, so that
    a training and a test split made with different seeds share their kinds); ``offset`` moves that spread by
    so many places along the list (other kinds, as evenly spread)."""
    pairs = []
    for png in sorted(Path(folder).rglob("*.png")):
        sound = next((png.with_suffix(e) for e in AUDIO_EXTENSIONS if png.with_suffix(e).exists()), None)
        if sound is not None:
            pairs.append((png, sound))
    if not pairs:
        raise FileNotFoundError(f"{folder}: no NAME.png with a NAME.ogg/.wav/.flac/.mp3 beside it")
    if kinds is not None and kinds < len(pairs):
        pairs = [pairs[(int(i) + offset) % len(pairs)] for i in np.linspace(0, len(pairs) - 1, kinds).round()]
    assets = []
    for png, sound in pairs:
        rgba = tvio.decode_image(str(png), mode=tvio.ImageReadMode.RGB_ALPHA).permute(1, 2, 0).numpy()
        try:
            info = probe(sound)
            wave = decode_audio(sound, 0.0, max(info.duration or 0.0, 0.05), sample_rate).waveform
        except DecodeError as e:
            raise DecodeError(sound, f"stamp sound unreadable: {e.reason}") from e
        name = str(png.relative_to(folder).with_suffix("")).replace(os.sep, "/")
        assets.append(Asset(name, np.ascontiguousarray(rgba), wave))
    return assets


def load_backgrounds(folder: str | os.PathLike) -> list[np.ndarray]:
    """RGB uint8 photos (sorted by path)."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise FileNotFoundError(f"{folder}: no JPEG or PNG images")
    return [tvio.decode_image(str(p), mode=tvio.ImageReadMode.RGB).permute(1, 2, 0).numpy() for p in paths]


def synthetic_assets(sample_rate: int, size: int = 96) -> list[Asset]:
    """The synthetic generator's objects as cut-outs (shape, colour, texture) with their sounds (2 s)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = size / 2 - 1
    dx, dy = xx - size / 2 + 0.5, yy - size / 2 + 0.5
    t = np.arange(int(2.0 * sample_rate)) / sample_rate
    assets = []
    for k, cls in enumerate(CLASSES):
        m = object_mask(cls.shape, dx, dy, r)
        rgb = np.asarray(cls.color, np.float32) * object_texture(cls.texture, dx, dy, r)[..., None]
        rgba = np.concatenate([np.clip(rgb, 0, 255), 255.0 * m[..., None]], axis=2).astype(np.uint8)
        wave = 0.5 * envelope(t, cls.rhythm, 0.0) * class_sound(cls, t, np.random.default_rng(k), 1.0)
        assets.append(Asset(cls.name, rgba, wave.astype(np.float32)))
    return assets


def _procedural_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    top, bottom = rng.uniform(30, 200, size=3), rng.uniform(30, 200, size=3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    img = top * (1 - ramp) + bottom * ramp + rng.normal(0, 8, size=(h, w, 1))
    return np.clip(np.broadcast_to(img, (h, w, 3)), 0, 255).astype(np.uint8)


def _cover(img: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of ``img`` with the frame's aspect ratio (at least 60% of its extent), resized to (h, w)."""
    ih, iw = img.shape[:2]
    f = rng.uniform(0.6, 1.0)
    ch = int(min(ih, iw * h / w) * f)
    cw = int(ch * w / h)
    y0, x0 = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
    return _resize(img[y0 : y0 + ch, x0 : x0 + cw], h, w)


def _position(h: int, w: int, spec: ComposeSpec, rng: np.random.Generator, placement: str) -> tuple[int, int]:
    """A top-left corner that keeps an ``h`` x ``w`` cut-out inside the frame, by ``placement``."""
    H, W = spec.height, spec.width
    if placement == "centre":
        cy, cx = rng.normal(H / 2, 0.12 * H), rng.normal(W / 2, 0.12 * W)
        return (int(np.clip(round(cy - h / 2), 0, H - h)), int(np.clip(round(cx - w / 2), 0, W - w)))
    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    for _ in range(50 if placement == "off_centre" else 0):  # a centre away from the frame's central half
        if abs(y + h / 2 - H / 2) > H / 4 or abs(x + w / 2 - W / 2) > W / 4:
            break
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return y, x


def _place(asset: Asset, spec: ComposeSpec, rng: np.random.Generator, placement: str = "uniform"
           ) -> tuple[np.ndarray, int, int]:
    """The cut-out scaled and maybe mirrored, and a top-left position inside the frame."""
    ah, aw = asset.rgba.shape[:2]
    longer = rng.uniform(*spec.scale) * spec.height
    s = longer / max(ah, aw)
    h, w = max(2, min(spec.height, int(round(ah * s)))), max(2, min(spec.width, int(round(aw * s))))
    img = _resize(asset.rgba, h, w)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return (img, *_position(h, w, spec, rng, placement))


def _paste(frame: np.ndarray, cut: np.ndarray, y: int, x: int) -> np.ndarray:
    """Alpha-blend ``cut`` at (y, x); returns the pasted alpha mask (H, W) in the frame."""
    h, w = cut.shape[:2]
    a = cut[..., 3:4].astype(np.float32) / 255.0
    region = frame[y : y + h, x : x + w].astype(np.float32)
    frame[y : y + h, x : x + w] = np.round(region * (1 - a) + cut[..., :3] * a).astype(np.uint8)
    mask = np.zeros(frame.shape[:2], dtype=bool)
    mask[y : y + h, x : x + w] = cut[..., 3] > 127
    return mask


def _box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _overlap(a: list[int], b: list[int]) -> float:
    """Intersection over the smaller box."""
    iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    return inter / max(1, min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])))


def _soundtrack(sound: np.ndarray, n: int, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """The recording repeated with short random gaps from a random phase, ``n`` samples, peak 0.5."""
    parts, total = [], 0
    while total < n + len(sound) + sample_rate:  # room for any start phase
        parts += [sound, np.zeros(int(rng.uniform(0.1, 0.4) * sample_rate), np.float32)]
        total += len(sound) + len(parts[-1])
    track = np.concatenate(parts)
    start = int(rng.integers(0, len(sound) + len(parts[1])))
    track = track[start : start + n]
    peak = float(np.abs(track).max()) or 1.0
    return (0.5 * track / peak + 0.002 * rng.standard_normal(n)).astype(np.float32)


def compose_clip(
    index: int, seed: int, assets: list[Asset], backgrounds: list[np.ndarray] | None, spec: ComposeSpec
) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """Frames, audio and ground truth of clip ``index`` (deterministic in ``(seed, index)``)."""
    rng = np.random.default_rng([seed, index])
    h, w = spec.height, spec.width
    kind = int(rng.integers(len(assets)))
    if spec.clips_per_kind is not None:  # balanced: clip i sounds as the kind of a seeded deal of the kinds
        deal = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(assets)), spec.clips_per_kind))
        kind = int(deal[index % len(deal)])
    others = [k for k in range(len(assets)) if k != kind]
    picks = [int(k) for k in rng.choice(others, size=min(spec.distractors, len(others)), replace=False)]
    bg = (_cover(backgrounds[int(rng.integers(len(backgrounds)))], h, w, rng) if backgrounds
          else _procedural_background(rng, h, w))
    sounding = _place(assets[kind], spec, rng, spec.placement)
    placed = []
    for k in picks:  # distractors beside (not on top of) the sounding cut-out where possible
        for _ in range(20):
            cut, y, x = _place(assets[k], spec, rng)
            a = [x, y, x + cut.shape[1], y + cut.shape[0]]
            b = [sounding[2], sounding[1], sounding[2] + sounding[0].shape[1], sounding[1] + sounding[0].shape[0]]
            if _overlap(a, b) < 0.15:
                break
        placed.append((k, cut, y, x))
    scene = bg.copy()
    distractor_boxes = [_box(_paste(scene, cut, y, x)) for _, cut, y, x in placed]
    sounding_box = _box(_paste(scene, *sounding))  # on top: its visible box is the ground truth
    n_frames = int(round(spec.duration * spec.fps))
    grain = rng.normal(0, 3, size=(n_frames, 1, 1, 1))  # a little flicker: a video, not a still
    frames = [np.clip(scene.astype(np.float32) + g, 0, 255).astype(np.uint8) for g in grain]
    audio = _soundtrack(assets[kind].sound, int(round(spec.duration * spec.sample_rate)), rng, spec.sample_rate)

    def norm(b: list[int]) -> list[float]:
        return [b[0] / w, b[1] / h, b[2] / w, b[3] / h]

    truth = {
        "file": f"clip_{index:05d}",
        "class": assets[kind].name,
        "bbox": [norm(sounding_box)],
        "distractors": [{"class": assets[k].name, "bbox": norm(b)} for (k, *_), b in zip(placed, distractor_boxes)],
    }
    return frames, audio, truth


def compose(
    output_dir: str | os.PathLike,
    num_clips: int,
    seed: int = 0,
    stamps: str | os.PathLike | None = None,
    backgrounds: str | os.PathLike | None = None,
    spec: ComposeSpec = ComposeSpec(),
    kinds: int | None = None,
    progress: bool = False,
    kind_offset: int = 0,
) -> list[str]:
    """Write ``OUT/clip_NNNNN.mp4`` and ``OUT/vggss.json``; returns the MP4 paths. ``kinds``, ``kind_offset``:
    which stamps (:func:`load_stamps`)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    assets = (load_stamps(stamps, spec.sample_rate, kinds, kind_offset) if stamps
              else synthetic_assets(spec.sample_rate))
    if kinds is not None and not stamps:
        assets = assets[:kinds]
    if len(assets) < 2 and spec.distractors:
        raise ValueError("distractors need at least two kinds of cut-out")
    bgs = load_backgrounds(backgrounds) if backgrounds else None
    entries, paths = [], []
    for i in track(range(num_clips), enabled=progress, desc="compose"):
        frames, audio, truth = compose_clip(i, seed, assets, bgs, spec)
        path = out / f"{truth['file']}.mp4"
        write_av(path, frames, spec.fps, audio[None], spec.sample_rate, gop=spec.gop)
        entries.append(truth)
        paths.append(str(path))
    (out / "vggss.json").write_text(json.dumps(entries, indent=1))
    return paths
