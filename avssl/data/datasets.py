"""Torch datasets of audio-visual clips over a manifest.

Each item is ``{"video": (C,T,H,W) float, "audio": (1,F,T) log-mel, "index", "path", "start",
"failures"}``. With ``defer=True`` the workers stop before the per-pixel and spectrogram work: items hold
uint8 ``video``, the raw ``waveform`` and the drawn augmentation parameters, and
:class:`BatchPreprocess` finishes the whole batch on its device (a GPU), with the same result.

A file that fails to decode is handled by ``on_error``: ``"skip"`` loads another (random) item
instead and records the failure in the returned item's ``"failures"`` list, which :func:`av_collate`
gathers per batch so that the training loop can report it; ``"raise"`` raises the
:class:`~avssl.data.decode.DecodeError`. Nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..config import ConfigError, InputError
from .audio import Spectrogram, SpectrogramConfig
from .cache import ClipCache
from .clips import ClipConfig, ClipSpec, RandomClipSampler, UniformClipSampler, segment_of
from .entries import Entries, load_entries
from .decode import Clip, DecodeError, decode_audio, decode_clip
from .transforms import AudioAugConfig, AudioTransform, VideoAugConfig, VideoTransform

__all__ = ["AVClipDataset", "BatchPreprocess", "ClipMaker", "DataConfig", "av_collate", "check_durations"]

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    __renamed__ = {"mel": "spectrogram"}  # the key's name before it also described linear-frequency spectrograms

    manifest: str | None = None  # JSONL from `avssl data manifest`
    root: str | None = None  # or a folder, scanned into a manifest in the run folder
    # or WebDataset shards (avssl/data/shards.py): "shards/{000000..000123}.tar", local paths or URLs (pipe:,
    # fsspec's); shards_index: their index (default: shards.json or avssl-index.json beside them, made by an
    # index pass where missing); shuffle_buffer: samples mixed across a worker's shards (held in memory)
    shards: str | None = None
    shards_index: str | None = None
    shuffle_buffer: int = 256
    clip: ClipConfig = field(default_factory=ClipConfig)
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    video_aug: VideoAugConfig = field(default_factory=VideoAugConfig)
    audio_aug: AudioAugConfig = field(default_factory=AudioAugConfig)
    missing_audio: Literal["error", "silence"] = "error"
    on_error: Literal["skip", "raise"] = "skip"
    max_retries: int = 10
    clips_per_video: int = 1  # training: random clips per video per epoch, one memory slot per video
    num_workers: int = 2
    decoder_threads: int = 1
    # Where colour jitter, normalization, log-mel and masks run: "worker" (per item, in the DataLoader
    # workers), "device" (per batch, on the training device), "auto" (device on CUDA, worker on CPU).
    preprocess: Literal["auto", "worker", "device"] = "auto"
    # training: decode each video once, whole, and cut clips from the stored frames and audio (avssl/data/cache.py).
    # true: every video; auto: the videos for which that pays over the run (shorter than the seconds their clips
    # would decode), none when they do not fit; false: none. cache_dir: where (pretraining's default: beside the
    # manifest, <manifest>.cache/); cache_max_gb: the most it may take (true: a larger cache stops the run)
    cache: bool | Literal["auto"] = False
    cache_dir: str | None = None
    cache_max_gb: float | None = 100.0


def check_durations(entries: Any, durations: np.ndarray, where: str) -> None:
    """Every entry needs its duration (clips are drawn inside it): an :class:`~avssl.config.InputError` naming the
    first row without one, and what to do."""
    unknown = np.flatnonzero(~(np.isfinite(durations) & (durations > 0)))
    if len(unknown):
        k = int(unknown[0])
        raise InputError(f"{where}: {len(unknown)} of {len(durations)} rows have no duration, the first row {k + 1} "
                         f"({entries[k].get('path')}): write the manifest with `avssl data manifest` (it probes each "
                         "file) or give each row its \"duration\" in seconds")


class ClipMaker:
    """The one clip cutter of files, the decode-once cache and shards: where in time (a random clip for
    training, or one of ``clips_per_video`` uniformly spaced ones), the decode (from the cache where it serves
    the entry, from a file, or from a shard's bytes with the audio in the same file or beside it in
    ``entry["audio_path"]``), the transforms; an item as :class:`AVClipDataset` describes it."""

    def __init__(self, cfg: DataConfig, train: bool, clips_per_video: int = 1, defer: bool = False,
                 crop_positions: tuple[float, ...] = (0.5,), random_times: bool = False,
                 cache: ClipCache | None = None) -> None:
        if cfg.spectrogram.sample_rate != cfg.clip.sample_rate:
            raise ValueError(
                f"spectrogram.sample_rate ({cfg.spectrogram.sample_rate}) must equal clip.sample_rate ({cfg.clip.sample_rate})"
            )
        if defer and len(crop_positions) > 1:
            raise ValueError("several evaluation crops are finished per item: use defer=False")
        self.cfg, self.train, self.defer, self.random_times, self.cache = cfg, train, defer, random_times, cache
        self.random_sampler = RandomClipSampler(cfg.clip)
        self.uniform_sampler = UniformClipSampler(cfg.clip, clips_per_video)
        self.video_tf = VideoTransform(cfg.clip.crop, train, cfg.video_aug, crop_positions)
        self.audio_tf = AudioTransform(train, cfg.audio_aug)
        self.spec = Spectrogram(cfg.spectrogram) if cfg.clip.audio_duration else None

    def clip_spec(self, duration: float, clip: int, g: torch.Generator | None,
                  segment: tuple[float, float] | None = None) -> ClipSpec:
        """Where clip ``clip`` of a video of ``duration`` seconds starts; inside ``segment`` (start, end) when the row
        stands for a part of its file (the clip kept inside it where it fits, centred on it where it does not)."""
        lo, hi = segment if segment is not None else (0.0, duration)
        if self.train or self.random_times:
            spec = self.random_sampler(hi - lo, g)
        else:
            spec = self.uniform_sampler(hi - lo)[clip]
        return ClipSpec(spec.start + lo, spec.audio_offset) if lo else spec

    def decode(self, entry: dict[str, Any], spec: ClipSpec, cached: bool = False) -> Clip:
        """The clip's frames and audio: cut from the cache, or decoded from the file (or the shard's bytes)."""
        if cached and self.cache is not None:
            return self.cache.clip(entry, spec.start, spec.audio_offset)
        c = self.cfg.clip
        audio_path = entry.get("audio_path")
        clip = decode_clip(entry["path"], spec.start, c.video_duration, c.fps, c.size,
                           None if audio_path is not None else (c.audio_duration or None), c.sample_rate,
                           audio_offset=spec.audio_offset, missing_audio=self.cfg.missing_audio,
                           threads=self.cfg.decoder_threads)
        if audio_path is not None and c.audio_duration:  # the audio track kept beside the video (KEY.m4a)
            a_start = spec.start + c.video_duration / 2 - c.audio_duration / 2 + spec.audio_offset
            audio = decode_audio(audio_path, a_start, c.audio_duration, c.sample_rate)
            clip.waveform, clip.audio_start, clip.audio_padded_samples = audio.waveform, a_start, audio.padded_samples
        return clip

    def item(self, entry: dict[str, Any], index: int, clip: int = 0, generator: torch.Generator | None = None,
             cached: bool = False, spec: ClipSpec | None = None) -> dict[str, Any]:
        """Decode and transform one clip of ``entry`` (memory-bank ``index``; ``spec``: where, instead of the
        sampler's choice); raises DecodeError."""
        g = generator
        duration = float(entry["duration"])
        spec = spec or self.clip_spec(duration, clip, g, segment_of(entry, duration))
        decoded = self.decode(entry, spec, cached)
        frames, video_params = self.video_tf.geometry(torch.from_numpy(decoded.frames), g)
        item: dict[str, Any] = {
            "index": index,
            "clip": clip,
            "path": str(entry["path"]),
            "start": spec.start,
            "padded": decoded.padded,
        }
        if self.defer:
            item["video"], item["video_params"] = frames, video_params
        elif frames.dim() == 5:  # several evaluation crops: (crops, C, T, H, W)
            item["video"] = self.video_tf.finish(frames, video_params.expand(len(frames), -1))
        else:
            item["video"] = self.video_tf.finish(frames[None], video_params[None])[0]
        if self.spec is not None:
            wave = self.audio_tf.waveform(torch.from_numpy(decoded.waveform), g)
            masks = self.audio_tf.mask_params(self.spec.num_bins, self.spec.num_frames(len(wave)), g)
            if self.defer:
                item["waveform"], item["audio_params"] = wave, masks
            else:
                with torch.no_grad():
                    spec_ = self.audio_tf.apply_masks(self.spec(wave)[None], masks[None])
                item["audio"] = spec_  # (1, F, T)
            item["has_audio"] = decoded.has_audio
        if "label" in entry:
            item["label"] = int(entry["label"])
        return item


class AVClipDataset(Dataset):
    """Clips of the videos of a manifest: one random clip per video (``train``), or
    ``clips_per_video`` uniformly spaced clips per video (evaluation; item = video * n + clip; with
    ``random_times``, clips at random times instead, still with the evaluation transform).

    Training draws ``cfg.clips_per_video`` random clips per video per epoch (item = clip * videos + video);
    every item of a video carries the same ``index``, so a memory bank keeps one slot per video."""

    def __init__(
        self,
        manifest: str | os.PathLike | list[dict[str, Any]] | Entries,
        cfg: DataConfig,
        train: bool,
        clips_per_video: int = 1,
        seed: int | None = None,
        defer: bool = False,
        crop_positions: tuple[float, ...] = (0.5,),
        random_times: bool = False,
        cached: np.ndarray | None = None,
    ) -> None:
        self.entries = manifest if isinstance(manifest, (list, Entries)) else load_entries(manifest)
        self.durations = (self.entries.durations if isinstance(self.entries, Entries)
                          else np.array([e.get("duration", np.nan) for e in self.entries], np.float64))
        where = "the given entries" if isinstance(manifest, (list, Entries)) else f"manifest {manifest}"
        if not len(self.entries):
            raise InputError(f"{where}: no usable files")
        check_durations(self.entries, self.durations, where)
        self.cfg = cfg
        self.train = train
        self.clips_per_video = cfg.clips_per_video if train else clips_per_video
        self.seed = seed
        self.epoch = 0
        self.cache = None
        self.cached = cached  # which entries the cache serves (None: all)
        if cfg.cache and train and (cached is None or cached.any()):  # evaluation reads each clip once
            if not cfg.cache_dir:
                raise ConfigError("data.cache needs data.cache_dir (the folder to keep decoded videos in)")
            self.cache = ClipCache(cfg.cache_dir, cfg.clip, cfg.missing_audio)
        self.maker = ClipMaker(cfg, train, self.clips_per_video, defer, crop_positions, random_times, self.cache)

    def set_epoch(self, epoch: int) -> None:
        """With a ``seed``, an item's random choices depend only on (seed, epoch, index)."""
        self.epoch = epoch

    def _generator(self, idx: int) -> torch.Generator | None:
        if self.seed is None:
            return None  # the process's global RNG (seeded per worker by the DataLoader)
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 10_000_019 + idx)

    def __len__(self) -> int:
        return len(self.entries) * self.clips_per_video

    def load(self, video: int, clip: int = 0, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Decode and transform one clip; raises DecodeError."""
        cached = self.cache is not None and (self.cached is None or bool(self.cached[video]))
        return self.maker.item(self.entries[video], video, clip, generator, cached)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if self.train:
            clip, video = divmod(idx, len(self.entries))
        else:
            video, clip = divmod(idx, self.clips_per_video)
        failures: list[dict[str, Any]] = []
        g = self._generator(idx)
        for _ in range(self.cfg.max_retries + 1):
            try:
                item = self.load(video, clip, g)
            except DecodeError as e:
                if self.cfg.on_error == "raise":
                    raise
                failures.append({"path": e.path, "reason": e.reason})
                log.warning("skipping %s: %s", e.path, e.reason)
                video = int(torch.randint(len(self.entries), (), generator=g))
                continue
            item["failures"] = failures
            return item
        raise DecodeError(
            failures[-1]["path"], f"{len(failures)} consecutive clips failed to decode; last: {failures[-1]['reason']}"
        )


def av_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """default_collate, with the per-item ``failures`` lists concatenated."""
    failures = [f for item in batch for f in item.pop("failures", [])]
    out = default_collate(batch)
    out["failures"] = failures
    return out


class BatchPreprocess(torch.nn.Module):
    """What :class:`AVClipDataset` leaves undone with ``defer=True``, on a whole batch on its device:
    uint8 video -> float, colour jitter, normalization; waveform -> log-mel, masks. Move the module to
    the device (``.to(device)``) once; it returns ``(video (B,C,T,H,W), audio (B,1,F,T) or None)``."""

    def __init__(self, cfg: DataConfig, train: bool) -> None:
        super().__init__()
        self.video_tf = VideoTransform(cfg.clip.crop, train, cfg.video_aug)
        self.audio_tf = AudioTransform(train, cfg.audio_aug)
        self.spec = Spectrogram(cfg.spectrogram) if cfg.clip.audio_duration else None

    @torch.no_grad()
    def forward(self, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        video = batch["video"].to(device, non_blocking=True)
        video = self.video_tf.finish(video, batch["video_params"])
        audio = None
        if self.spec is not None:
            spec = self.spec(batch["waveform"].to(device, non_blocking=True))
            audio = self.audio_tf.apply_masks(spec, batch["audio_params"]).unsqueeze(1)
        return video, audio
