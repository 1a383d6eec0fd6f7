"""Checkpoints of plain types and tensors (loadable with ``torch.load(weights_only=True)``), written
atomically; and the one place a checkpoint becomes a model with its config."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, InputError, from_dict, from_saved
from ..fileio import atomic_write, file_kind
from ..models.avmodel import AVModel
from ..models.classifier import make_classifier
from ..models.video import R2Plus1D, VideoEncoderConfig
from .configs import FinetuneConfig, PretrainConfig

__all__ = ["checkpoint_file", "classifier_model", "keep_copy", "load_checkpoint", "unreadable", "pretrained_model", "pretrained_video_encoder",
           "prune_checkpoints", "save_atomic"]


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def keep_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Keep ``src`` as it is now under the name ``dst``: a hard link (no second write) where the file
    system allows, else a copy. Later atomic rewrites of ``src`` replace its name, not this file."""
    dst = Path(dst)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def unreadable(path: str | os.PathLike, e: BaseException) -> str:
    """The one line that says why ``path`` is not a checkpoint avssl reads (never advising to load it with
    ``weights_only=False``, which runs whatever code a file of unknown origin holds): what the file is where its first
    bytes say (a video, a web page, an empty or truncated file), else the reader's own reason."""
    kind = file_kind(path)
    if kind not in ("zip", "pickle", None):
        hint = (" (a shared-folder page saved instead of the file: download the file itself)"
                if kind == "an HTML page" else "")
        return f"{path}: not a PyTorch checkpoint: it is {kind if kind != 'empty' else 'an empty file'}{hint}"
    if "Weights only load failed" in str(e) and "truncated" not in str(e).lower() and kind is not None:
        why = "it holds Python objects besides tensors and plain values (not loaded: loading them could run code)"
    else:
        first = next((x.strip() for x in str(e).splitlines() if x.strip()), "")
        why = f"{type(e).__name__}: {first[:160]}" if first else type(e).__name__
    return f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another kind of file?): {why}"


def checkpoint_file(spec: str | os.PathLike) -> Path:
    """``run.init_from`` as given to :func:`~avssl.train.pretrain.pretrain` and :func:`~avssl.train.finetune.finetune`
    from Python: a
    checkpoint file, or a run folder's ``last.pt``. (The ``avssl`` command also takes a released model's name: it
    passes :func:`avssl.hub.checkpoint_path` as their ``resolve``.)"""
    path = Path(spec)
    if path.is_dir() and (path / "last.pt").is_file():
        return path / "last.pt"
    if not path.is_file():
        raise InputError(f"{spec}: no such checkpoint file (released models are named through the avssl command, or "
                         "resolved with avssl.hub.checkpoint_path)")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint of plain types and tensors (``weights_only``). A missing file, or one that is not such a
    checkpoint, is an :class:`~avssl.config.InputError` naming it."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such checkpoint file")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure to read is one line
        raise InputError(unreadable(path, e)) from None
    if not isinstance(ck, dict):
        raise InputError(f"{path}: not an avssl checkpoint (a {type(ck).__name__}, not a dict)")
    return ck


def prune_checkpoints(folder: str | os.PathLike, pattern: str, keep: int) -> None:
    """Delete all but the ``keep`` newest files matching ``pattern`` (by name order)."""
    files = sorted(Path(folder).glob(pattern))
    for f in files[: max(0, len(files) - keep)]:
        f.unlink()


def _pretraining_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], PretrainConfig]:
    ck = load_checkpoint(path)
    if "config" not in ck or "model" not in ck:
        raise InputError(f"{path}: not an avssl checkpoint (no config and model; the authors' released files are "
                         "read by `avssl import avid-cma`)")
    if "classes" in ck:
        raise InputError(f"{path}: a fine-tuning checkpoint; this takes pretraining (or imported) checkpoints")
    return ck, from_saved(PretrainConfig, ck["config"])


def pretrained_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[AVModel, PretrainConfig]:
    """(model in eval mode with its audio front end, its config) of a pretraining checkpoint: ``last.pt``,
    ``epoch_N.pt``, or one written by ``avssl import``."""
    ck, cfg = _pretraining_checkpoint(path)
    model = AVModel(cfg.model, cfg.data.spectrogram)
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), cfg


def pretrained_video_encoder(path: str | os.PathLike) -> tuple[R2Plus1D, VideoEncoderConfig]:
    """The video encoder of a pretraining checkpoint, architecture and weights (what fine-tuning starts from)."""
    ck, cfg = _pretraining_checkpoint(path)
    if cfg.model.video_encoder != "r2plus1d":
        raise ConfigError(f"run.init_from {path}: its video encoder is a {cfg.model.video_encoder} encoder (a "
                          "localization model); fine-tuning takes R(2+1)D encoders")
    encoder = R2Plus1D(cfg.model.video)
    encoder.load_state_dict({k[len("video."):]: v for k, v in ck["model"].items() if k.startswith("video.")})
    return encoder, cfg.model.video


def classifier_model(path: str | os.PathLike, device: str | torch.device = "cpu"
                     ) -> tuple[nn.Module, FinetuneConfig, list[str]]:
    """(classifier in eval mode, its fine-tuning config, class names) of a fine-tuning checkpoint."""
    ck = load_checkpoint(path)
    if "classes" not in ck:
        raise InputError(f"{path}: not a fine-tuning checkpoint (no classes)")
    cfg = from_saved(FinetuneConfig, ck["config"])
    f = cfg.finetune
    encoder = R2Plus1D(from_dict(VideoEncoderConfig, ck["video_config"]))
    model = make_classifier(encoder, len(ck["classes"]), f.mode, f.dropout, f.stage_grids, f.encoder_bn)
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), cfg, list(ck["classes"])
