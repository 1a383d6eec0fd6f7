"""Where in the picture a sound comes from: audio-video similarity maps, one per output frame.

For an output frame at time ``t``: the clip of the pretraining spec centred on ``t`` (its whole frames,
resized so that the short side is ``size``: no crop, so the map covers the full picture) goes through
the video encoder, whose last feature map, averaged over time, is embedded per location
(:meth:`AVModel.spatial_video`); the audio window of the pretraining spec centred on ``t`` (shifted by
``audio_offset``; from the video's own track or another file) is embedded by the audio encoder. The
cosine similarity per location is put on the displayed frame (upright, at its own size and aspect), each
cell's value at its receptive field's centre and interpolated bilinearly between centres
(:meth:`Localizer.project`), and normalized to [0, 1]: ``minmax`` per frame, or ``fixed`` (the cosine clipped to
[0, 1], so that a sound that matches nothing stays dark).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..data.audio import Spectrogram
from ..data.clips import clip_span
from ..data.datasets import DataConfig
from ..data.decode import DecodeError, decode_audio, decode_frames, probe
from ..models.avmodel import AVModel
from ..progress import counted, track
from .objects import ObjectMaps

__all__ = ["Geometry", "Localizer", "MapChunk", "MapConfig", "MapPlan", "VideoMaps", "audio_extent", "grid_to_frame",
           "normalize_maps", "square"]


@dataclass
class MapConfig:
    size: int | None = None  # short side of the whole frame given to the video encoder; None: 2x the training crop
    # how the frame becomes the encoder's input: "short_side" (its short side resized to size, the aspect kept) or
    # "square" (resized to size x size with PIL's antialiased bicubic: EZ-VSL's and SLAVC's test transform)
    resize: Literal["short_side", "square"] = "short_side"
    last_stride: int = 1  # spatial stride of the encoder's last stage (trained with 2; 1 = twice finer maps)
    pad: float = 0.125  # reflect-pad the frame by this fraction of its short side, crop the map back (border artifacts)
    fps: float = 8.0  # output maps per second of video
    # minmax: per map; fixed: the cosine clipped to [0, 1]; range: the cosine's [-1, 1] as [0, 1] (SLAVC's scores)
    norm: Literal["minmax", "fixed", "range"] = "minmax"
    smooth: int = 1  # box-average the similarity over this many cells of the encoder's map (1: off)
    # where a cell's value sits on the frame: at its receptive field's centre ("centres"), or the cells spread
    # from corner to corner ("corners": F.interpolate's align_corners=True, as EZ-VSL and SLAVC draw their maps);
    # and how values between cells are interpolated
    cells: Literal["centres", "corners"] = "centres"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    # object-guided localization (EZ-VSL's OGL): the map mixed with an ImageNet ResNet-18's object map, alpha x AV +
    # (1 - alpha) x objects; ogl: alpha (None: off); ogl_alpha: what --ogl without a value takes; ogl_combine:
    # "minmax" (each map and the mix min-max normalized: EZ-VSL) or "range" (the AV map's cosine range, objects
    # over 0-2.5: SLAVC)
    ogl: float | None = None
    ogl_alpha: float = 0.4
    ogl_combine: Literal["minmax", "range"] = "minmax"
    batch_size: int = 16
    chunk: int = 32  # output frames decoded at once (bounds memory on long videos)

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"localize.{key} (--{key.replace('_', '-')}): {why}, got {getattr(self, key)!r}")

        if self.smooth < 1 or self.smooth % 2 == 0:
            raise bad("smooth", "an odd number of cells, 1 for none (an even box would move the map by half a cell)")
        if self.last_stride not in (1, 2):
            raise bad("last_stride", "1 or 2")
        if not 0 <= self.pad < 0.5:
            raise bad("pad", "a fraction of the short side in [0, 0.5)")
        if self.size is not None and self.size < 8:
            raise bad("size", "a short side of at least 8 pixels")
        for key in ("fps",):
            if not getattr(self, key) > 0:
                raise bad(key, "must be positive")
        for key in ("batch_size", "chunk"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        for key in ("ogl", "ogl_alpha"):
            value = getattr(self, key)
            if value is not None and not 0 <= value <= 1:
                raise bad(key, "a weight of the audio-visual map in [0, 1]")
        if self.cells == "corners" and self.pad:
            raise bad("pad", "0 with localize.cells corners (the cells are spread over the whole unpadded input)")


@dataclass(frozen=True)
class Geometry:
    """Where the encoder's cells lie: ``stride`` input pixels per cell, cell ``i`` centred on pixel ``stride * i``
    of the frame padded by ``pad`` pixels on each side; ``height`` x ``width`` the frame given to the encoder. With
    ``corners``, the cells spread instead from the input's first pixel to its last (``align_corners=True``);
    ``mode``: the interpolation between cells."""

    stride: int
    pad: int
    height: int
    width: int
    corners: bool = False
    mode: str = "bilinear"


@dataclass
class VideoMaps:
    """``maps`` float32 ``(T, H, W)`` in [0, 1] at the displayed frames' size; ``frames`` uint8
    ``(T, H, W, 3)``; ``similarity`` the raw cosine ``(T, h, w)`` on the encoder's grid (see
    :meth:`Localizer.project` for where its cells lie on the frame); ``waveform`` the audio
    that was compared, over the whole video (for muxing), at ``sample_rate``."""

    maps: np.ndarray
    times: np.ndarray
    frames: np.ndarray
    similarity: np.ndarray
    waveform: np.ndarray
    sample_rate: int
    audio_source: str
    audio_offset: float
    norm: str
    notes: list[str] = field(default_factory=list)


OBJECT_RANGE = 2.5  # SLAVC's test script scores the object map over [0, 2.5]
_CHUNK_PIXELS = 8_000_000  # displayed pixels of one chunk of maps (frames, maps and their projection in memory)


@dataclass
class MapPlan:
    """What :meth:`Localizer.chunks` maps: output ``times``, each one's clip start and audio window start, the
    compared audio's source and offset, the video's length (0 for a still), notes for the reader."""

    video: str
    source: str
    audio_offset: float
    times: np.ndarray
    starts: np.ndarray
    a_starts: np.ndarray
    length: float
    notes: list[str] = field(default_factory=list)
    padded_samples: int = 0  # audio samples outside the source, compared as silence (counted as chunks go)
    pixels: int = 0  # of a displayed frame (0: unknown)
    heard: np.ndarray | None = None  # per output time, the share of its audio window inside the track (1: all)
    extent_known: bool = False  # whether the track's start and end were known when the plan was made

    @property
    def no_sound(self) -> np.ndarray:
        """Per output time: whether its window holds more silence (outside the track) than sound. Such a map is
        compared with silence: it is marked on the pictures, not shown as where a sound comes from."""
        return np.zeros(len(self.times), bool) if self.heard is None else self.heard < NO_SOUND_BELOW


@dataclass
class MapChunk:
    """``cfg.chunk`` output times' displayed ``frames`` (uint8 ``(n, H, W, 3)``), ``maps`` (float32 ``(n, H, W)`` in
    [0, 1]) and raw cosine ``similarity`` on the encoder's grid (``(n, h, w)``)."""

    times: np.ndarray
    frames: np.ndarray
    maps: np.ndarray
    similarity: np.ndarray
    objects: np.ndarray | None = None  # with OGL: the object maps on their grid


NO_SOUND_BELOW = 0.5  # a map whose audio window is less than half inside the track has no sound to show


def audio_extent(info: Any) -> tuple[float, float] | None:
    """(start, end) of a file's audio track on its container's clock (the times avssl decodes at); None when its
    length is not known."""
    a = info.audio
    if a is None:
        return None
    length = a.duration if a.duration else (info.duration - a.start_time if info.duration else None)
    return (a.start_time, a.start_time + length) if length and length > 0 else None


def _silence_notes(times: np.ndarray, heard: np.ndarray, extent: tuple[float, float], audio_offset: float,
                   length: float, source: str) -> list[str]:
    """What the reader needs to know of the sound's extent, in seconds of the video: where it has none, and which maps
    were compared with more silence than sound."""
    notes = []
    first, last = extent[0] - audio_offset, extent[1] - audio_offset  # the track on the video's clock
    if length and last < length - 0.01:
        notes.append(f"the last {length - last:.2f} s have no sound (the audio of {source} ends at {last:.2f} s of "
                     f"{length:.2f} s)")
    if length and first > 0.01:
        notes.append(f"the first {first:.2f} s have no sound (the audio of {source} starts at {first:.2f} s)")
    silent = heard < NO_SOUND_BELOW
    if silent.any():
        at = times[silent]
        where = f"at {at[0]:.2f} s" if len(at) == 1 else f"between {at.min():.2f} and {at.max():.2f} s"
        its = "its frames" if len(at) == 1 else "their frames"
        notes.append(f"{counted(len(at), 'map')} of {len(times)} ({where}) would compare {its} with more silence than "
                     "sound: marked 'no sound' on the pictures, not shown as maps")
    return notes


def square(frame: np.ndarray, size: int) -> np.ndarray:
    """A uint8 frame ``(H, W, 3)`` resized to ``(size, size, 3)`` as PIL's ``Resize((size, size), BICUBIC)`` does it
    (antialiased): EZ-VSL's and SLAVC's test transform, bit for bit."""
    from PIL import Image

    return np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))


def grid_to_frame(sim: torch.Tensor | np.ndarray, geometry: Geometry, height: int, width: int) -> torch.Tensor:
    """Cell maps ``(B, h', w')`` on the encoder's grid (``similarity.npy`` of ``avssl localize``, with its
    ``geometry.json``) -> ``(B, height, width)`` on a displayed frame: each cell's value sits at its receptive
    field's centre (input pixel ``stride * i`` of the padded frame), carried through the padding and the resize to
    the displayed frame, and pixels between centres are interpolated bilinearly (beyond the outer centres, the
    outer cells' values). :func:`normalize_maps` then gives what the overlays show."""
    sim = torch.as_tensor(sim, dtype=torch.float32)
    g = geometry

    def cells(n_out: int, n_in: int, n_cells: int) -> torch.Tensor:
        pixel = (torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5  # on the encoder's input
        if g.corners:  # cell 0 on the input's first pixel, the last cell on its last
            return 2 * pixel / max(n_in - 1, 1) - 1 if n_cells > 1 else torch.zeros_like(pixel)
        c = (pixel + g.pad) / g.stride
        return (2 * c / (n_cells - 1) - 1) if n_cells > 1 else torch.zeros_like(c)

    ys, xs = cells(height, g.height, sim.shape[1]), cells(width, g.width, sim.shape[2])
    grid = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)], -1)
    grid = grid.to(sim.device, torch.float32)[None].expand(len(sim), -1, -1, -1)
    return F.grid_sample(sim[:, None], grid, mode=g.mode, padding_mode="border", align_corners=True)[:, 0]


def normalize_maps(sim: torch.Tensor, norm: str) -> torch.Tensor:
    """Cosine similarity maps ``(B, H, W)`` -> [0, 1]: ``minmax`` per map, ``fixed`` (clipped to [0, 1]), or
    ``range`` (the cosine's [-1, 1] mapped onto [0, 1]: SLAVC's ``(S + 1/tau) / (2/tau)`` of ``S = cos / tau``)."""
    if norm == "fixed":
        return sim.clamp(0.0, 1.0)
    if norm == "range":
        return (sim + 1.0) / 2.0
    if norm == "minmax":
        lo = sim.flatten(1).amin(1).view(-1, 1, 1)
        hi = sim.flatten(1).amax(1).view(-1, 1, 1)
        return (sim - lo) / (hi - lo).clamp_min(1e-8)
    raise ValueError(f"unknown normalization {norm!r} (minmax, fixed)")


class Localizer:
    """Similarity maps of a pretrained :class:`AVModel` (its ``data`` config gives the clip spec)."""

    def __init__(self, model: AVModel, data: DataConfig, cfg: MapConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.cfg = cfg = cfg or MapConfig()
        self.data = data
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        with self.map_stride():  # a stride the encoder cannot run at is refused here, once
            pass
        self.size = cfg.size or 2 * data.clip.crop
        clip = data.clip
        self.one_frame = int(round(clip.video_duration * clip.fps)) == 1  # the encoded frame is the shown one
        self.objects = ObjectMaps().to(self.device) if cfg.ogl is not None else None
        self.spec = Spectrogram(data.spectrogram).to(self.device)
        self.mean = torch.tensor(data.video_aug.mean, device=self.device).view(1, 3, 1, 1, 1)
        self.std = torch.tensor(data.video_aug.std, device=self.device).view(1, 3, 1, 1, 1)

    @contextmanager
    def map_stride(self) -> Iterator[None]:
        """The video encoder at ``cfg.last_stride`` for the maps, and back at its own stride afterwards: the
        model is not changed for anyone else who holds it (a training run that evaluates on it)."""
        encoders = self.model.video_encoders()
        before = [e.last_stride for e in encoders]
        try:
            for e in encoders:
                e.set_last_stride(self.cfg.last_stride)
        except ValueError as e:
            for enc, b in zip(encoders, before):
                enc.set_last_stride(b)
            raise ConfigError(f"localize.last_stride (--last-stride): {e}") from None
        try:
            yield
        finally:
            for e, b in zip(encoders, before):
                e.set_last_stride(b)

    @torch.no_grad()
    def similarity(self, video: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
        """uint8 clips ``(B, T, H, W, 3)`` and waveforms ``(B, N)`` -> cosine maps ``(B, h, w)`` on the encoder's
        grid (of the frames reflect-padded by ``pad``); :meth:`project` puts them on a displayed frame."""
        return self.grids(video, waveform)[0]

    @torch.no_grad()
    def grids(self, video: torch.Tensor, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(:meth:`similarity`, the object maps ``(B, h, w)`` on their own grid with OGL, else None)."""
        x = video.to(self.device).permute(0, 4, 1, 2, 3).float().div_(255).sub_(self.mean).div_(self.std)
        h, w = x.shape[-2:]
        p = int(round(self.cfg.pad * min(h, w)))
        if p:
            x = F.pad(x, (p, p, p, p, 0, 0), mode="reflect")
        spec = self.spec(waveform.to(self.device)).unsqueeze(1)
        with self.map_stride():
            v = self.model.spatial_video(x)
            stride = self._encoder().spatial_stride
        a = self.model.embed_audio(spec)
        sim = torch.einsum("bdhw,bd->bhw", v, a).float()
        k = self.cfg.smooth
        if k > 1:  # a best location on an object's edge spreads over the object (odd k: centred on each cell)
            sim = F.avg_pool2d(sim[:, None], k, 1, k // 2, count_include_pad=False)[:, 0]
        corners, mode = self.cfg.cells == "corners", self.cfg.interpolation
        self.geometry = Geometry(stride, p, h, w, corners, mode)
        objects = None
        if self.objects is not None:
            objects = self.objects(x[:, :, x.shape[2] // 2])
            self.object_geometry = Geometry(self.objects.stride, p, h, w, corners, mode)
        return sim, objects

    def _encoder(self) -> Any:
        """The video encoder the maps come from (the momentum copy where the model embeds with it)."""
        video, _, _, _ = self.model._which(None)
        return video

    def project(self, sim: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Cell maps ``(B, h', w')`` of the last :meth:`similarity` -> ``(B, height, width)`` on the displayed frame
        (:func:`grid_to_frame` with this localizer's geometry)."""
        return grid_to_frame(sim, self.geometry, height, width)

    def finish(self, sim: torch.Tensor, objects: torch.Tensor | None = None) -> torch.Tensor:
        """Projected cosine maps ``(B, H, W)`` -> the maps shown, in [0, 1]: normalized (``norm``), and with OGL
        (``objects``: the projected object maps) mixed as EZ-VSL's or SLAVC's test script mixes them."""
        if objects is None or self.cfg.ogl is None:
            return normalize_maps(sim, self.cfg.norm)
        alpha = self.cfg.ogl
        if self.cfg.ogl_combine == "minmax":
            mixed = alpha * normalize_maps(sim, "minmax") + (1 - alpha) * normalize_maps(objects, "minmax")
            return normalize_maps(mixed, "minmax")
        return alpha * normalize_maps(sim, "range") + (1 - alpha) * objects / OBJECT_RANGE

    def default_times(self, duration: float | None) -> np.ndarray:
        """Output times ``k / fps`` covering the video (one at 0 for a still image)."""
        if not duration:
            return np.zeros(1)
        n = max(1, int(math.floor(duration * self.cfg.fps + 1e-6)))
        return np.arange(n) / self.cfg.fps

    def starts(self, times: np.ndarray, duration: float) -> np.ndarray:
        """The start of each output time's clip: centred on the time and, as training samples clips, shifted
        to keep the clip's frames and audio window inside ``[0, duration]`` (centred when the media is shorter
        than the window); near either end of a file the window moves, it is not padded."""
        clip = self.data.clip
        if self.one_frame:  # the frame encoded is the frame shown at t; its sound window moves alone (audio_starts)
            return np.asarray(times, np.float64)
        starts = np.asarray(times, np.float64) - clip.video_duration / 2
        if not duration:  # a still image: frames repeat, the audio comes from the middle of its sound file
            return starts
        lo, hi = clip_span(clip, clip.audio_offset)
        first, last = -lo, duration - hi
        return np.clip(starts, first, last) if last >= first else np.full_like(starts, max(0.0, (duration - hi - lo) / 2))

    def audio_starts(self, starts: np.ndarray, duration: float, audio_offset: float = 0.0) -> np.ndarray:
        """Where each clip's audio window starts (in the compared file's time: the clip's ``audio_offset`` and the
        given one added). A one-frame clip's window, centred on its frame, is shifted to stay inside ``[0,
        duration]`` near either end of a video (as a longer clip is, frames and sound together). A still image
        (``duration`` 0) takes the window centred on ``audio_offset`` (the middle of its sound file)."""
        clip = self.data.clip
        if not duration:  # a still: its sound's own middle (audio_offset holds half the sound file's length)
            return np.full(len(starts), audio_offset - clip.audio_duration / 2)
        a = np.asarray(starts, np.float64) + clip.video_duration / 2 - clip.audio_duration / 2 + clip.audio_offset
        if self.one_frame:
            a = np.clip(a, 0.0, max(0.0, duration - clip.audio_duration)) if duration >= clip.audio_duration else (
                np.full_like(a, (duration - clip.audio_duration) / 2))
        return a + audio_offset

    def _duration(self, info) -> float:
        """The video's length; 0 for a still image (its frame repeats, its sound comes from another file)."""
        if info.is_still:
            return 0.0
        return (info.video.duration if info.video is not None and info.video.duration else info.duration) or 0.0

    def audio_at(self, video: str | os.PathLike, t: float, audio: str | os.PathLike, audio_offset: float = 0.0
                 ) -> np.ndarray:
        """The waveform a map of ``video`` at ``t`` is compared with: the clip's audio window in ``audio``."""
        clip = self.data.clip
        duration = self._duration(probe(video))
        a_start = float(self.audio_starts(self.starts(np.array([t]), duration), duration, audio_offset)[0])
        return decode_audio(audio, a_start, clip.audio_duration, clip.sample_rate).waveform

    def _clips(self, video: str | os.PathLike, starts: np.ndarray) -> torch.Tensor:
        """uint8 clips ``(B, T, h, w, 3)`` at short side ``size`` starting at ``starts``, decoded in one pass."""
        clip = self.data.clip
        n = max(1, int(round(clip.video_duration * clip.fps)))
        want = (starts[:, None] + np.arange(n)[None, :] / clip.fps).ravel()
        uniq, inverse = np.unique(want, return_inverse=True)
        if self.cfg.resize == "square":  # the whole frame squeezed to size x size, as PIL resizes it (their test)
            small = torch.from_numpy(np.stack([square(f, self.size) for f in decode_frames(video, uniq)]))
        else:
            small = torch.from_numpy(decode_frames(video, uniq, self.size))
        return small[torch.from_numpy(inverse.reshape(len(starts), n))]

    def _similarities(self, clips: torch.Tensor, waves: torch.Tensor) -> torch.Tensor:
        """:meth:`similarity` in batches of ``batch_size``."""
        return self._grids(clips, waves)[0]

    def _grids(self, clips: torch.Tensor, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`grids` in batches of ``batch_size``."""
        out = [self.grids(clips[b : b + self.cfg.batch_size], waves[b : b + self.cfg.batch_size])
               for b in range(0, len(clips), self.cfg.batch_size)]
        sims = torch.cat([o[0] for o in out])
        return sims, (torch.cat([o[1] for o in out]) if out[0][1] is not None else None)

    def project_objects(self, objects: torch.Tensor | None, height: int, width: int) -> torch.Tensor | None:
        """Object maps of the last :meth:`grids` on the displayed frame (None without OGL)."""
        return None if objects is None else grid_to_frame(objects, self.object_geometry, height, width)

    @torch.no_grad()
    def compare(self, video: str | os.PathLike, t: float, waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(the frame shown at ``t``, raw cosine maps ``(K, H, W)`` at its size): the clip at ``t`` against each
        of ``waveforms`` (the clip spec's audio length at its rate), e.g. the clip's own sound, another clip's,
        silence. The video is encoded once per waveform, from one decode."""
        frame, sims, _ = self.compare_maps(video, t, waveforms)
        return frame, sims

    @torch.no_grad()
    def compare_maps(self, video: str | os.PathLike, t: float, waveforms: list[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`compare`, and the maps shown (:meth:`finish`: normalized, with OGL where it is on)."""
        start = self.starts(np.array([t]), self._duration(probe(video)))
        frame = decode_frames(video, [t])
        clips = self._clips(video, start).expand(len(waveforms), -1, -1, -1, -1)
        waves = torch.stack([torch.as_tensor(np.asarray(w, np.float32)) for w in waveforms])
        grid, objects = self._grids(clips, waves)
        sims = self.project(grid, *frame.shape[1:3])
        heat = self.finish(sims, self.project_objects(objects, *frame.shape[1:3]))
        return frame[0], sims.cpu().numpy(), heat.cpu().numpy()

    def plan(self, video: str | os.PathLike, times: np.ndarray | list[float] | None = None,
             audio: str | os.PathLike | None = None, audio_offset: float = 0.0, start: float | None = None,
             duration: float | None = None) -> MapPlan:
        """What maps of ``video`` will be made: at ``times`` (default: every ``1 / fps`` s, within ``[start, start +
        duration)`` when given), with the audio of ``audio`` (default: the video's own track) shifted by
        ``audio_offset`` seconds. Raises DecodeError (no audio to compare with, an unreadable file)."""
        clip = self.data.clip
        info = probe(video)
        length = self._duration(info)
        if times is None:
            times = self.default_times(length)
            if start is not None or duration is not None:
                lo = max(0.0, start or 0.0)
                hi = lo + duration if duration is not None else max(length, lo)
                times = times[(times >= lo - 1e-9) & (times < hi - 1e-9)]
                if not len(times):
                    raise DecodeError(video, f"no map time in [{lo:g}, {hi:g}) s: the video is {length:.2f} s long")
        else:
            times = np.sort(np.asarray(times, np.float64))
        source = os.fspath(audio) if audio is not None else os.fspath(video)
        if audio is None and info.audio is None:
            raise DecodeError(video, "no audio track: give another file's audio with --audio")
        if audio is not None and probe(source).audio is None:
            raise DecodeError(source, "no audio stream")
        notes: list[str] = []
        source_info = info if audio is None else probe(source)
        if info.is_still:  # one map, the sound's window taken from the middle of its file
            audio_offset += (source_info.duration or 0.0) / 2
            notes.append(f"a still image: compared with the middle of {source}")
        starts = self.starts(times, length)
        a_starts = self.audio_starts(starts, length, audio_offset)
        pixels = info.video.width * info.video.height if info.video is not None else 0
        extent = audio_extent(source_info)
        heard = np.ones(len(times))
        if extent is not None:  # the share of each window's audio inside the track (the rest is compared as silence)
            ends = np.minimum(a_starts + clip.audio_duration, extent[1]) - np.maximum(a_starts, extent[0])
            heard = np.clip(ends / clip.audio_duration, 0.0, 1.0)
            notes += _silence_notes(times, heard, extent, audio_offset, length, source)
        return MapPlan(os.fspath(video), source, audio_offset, times, starts, a_starts, length, notes, pixels=pixels,
                       heard=heard, extent_known=extent is not None)

    def chunks(self, plan: MapPlan, progress: bool = False) -> Iterator[MapChunk]:
        """The plan's maps ``cfg.chunk`` output times at a time: memory holds one chunk (its frames, its audio
        windows), whatever the video's length."""
        clip, cfg = self.data.clip, self.cfg
        sr, n_audio = clip.sample_rate, int(round(clip.audio_duration * clip.sample_rate))
        # at most cfg.chunk times, and no more than ~8 Mpixels of frames at once (8 frames of 720p)
        step = max(1, min(cfg.chunk, _CHUNK_PIXELS // plan.pixels)) if plan.pixels else cfg.chunk
        for s in track(range(0, len(plan.times), step), enabled=progress, desc="maps", unit="chunk"):
            part = slice(s, s + step)
            frames = decode_frames(plan.video, plan.times[part])
            a_starts = plan.a_starts[part]
            a0 = float(a_starts.min())  # the audio this chunk's windows touch, decoded once
            track_ = decode_audio(plan.source, a0, float(a_starts.max()) - a0 + clip.audio_duration, sr)
            if track_.padded_samples:
                plan.padded_samples += track_.padded_samples
            wave_all = F.pad(torch.from_numpy(track_.waveform), (0, n_audio))  # room for rounding at the end
            offsets = [int(round((a - a0) * sr)) for a in a_starts]
            waves = torch.stack([wave_all[o : o + n_audio] for o in offsets])
            sim, objects = self._grids(self._clips(plan.video, plan.starts[part]), waves)
            size = frames.shape[1:3]
            maps = self.finish(self.project(sim, *size), self.project_objects(objects, *size)).cpu().numpy()
            yield MapChunk(plan.times[part], frames, maps, sim.cpu().numpy(),
                           objects.cpu().numpy() if objects is not None else None)
        if plan.padded_samples and not plan.extent_known:  # every chunk made: said once, where the plan could not
            plan.notes.append(f"{plan.padded_samples / sr:.2f} s of the compared audio lie outside {plan.source} "
                              "(compared as silence)")

    def audio_span(self, plan: MapPlan) -> tuple[float, float]:
        """(start, seconds) of the compared audio over the mapped span, from the first output time to one map period
        past the last: what is muxed beside the maps."""
        period = 1.0 / self.cfg.fps
        t0 = float(plan.times[0]) if plan.length else 0.0
        span = (float(plan.times[-1]) - t0 + period) if plan.length else period
        return t0 + plan.audio_offset, max(span, period)

    def waveform(self, plan: MapPlan) -> np.ndarray:
        """The compared audio over :meth:`audio_span`, whole in memory (clips and stills)."""
        return decode_audio(plan.source, *self.audio_span(plan), self.data.clip.sample_rate).waveform

    def __call__(
        self,
        video: str | os.PathLike,
        times: np.ndarray | list[float] | None = None,
        audio: str | os.PathLike | None = None,
        audio_offset: float = 0.0,
        progress: bool = False,
    ) -> VideoMaps:
        """Maps for ``video`` at ``times`` (default: every ``1 / fps`` s) with the audio of ``audio`` (default:
        the video's own track) shifted by ``audio_offset`` seconds, held in memory (for clips and stills; a long
        video: :meth:`plan` and :meth:`chunks`). Raises DecodeError."""
        plan = self.plan(video, times, audio, audio_offset)
        parts = list(self.chunks(plan, progress))
        return VideoMaps(
            maps=np.concatenate([c.maps for c in parts]), times=plan.times,
            frames=np.concatenate([c.frames for c in parts]), similarity=np.concatenate([c.similarity for c in parts]),
            waveform=self.waveform(plan), sample_rate=self.data.clip.sample_rate, audio_source=plan.source,
            audio_offset=plan.audio_offset, norm=self.cfg.norm, notes=plan.notes,
        )
