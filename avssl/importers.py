"""``avssl import``: other implementations' released checkpoints -> avssl pretraining checkpoints that every command
takes (``localize``, ``evaluate``, ``embed``, ``score``, ``run.init_from``, :func:`avssl.load_pretrained`).

``avssl import avid-cma``: the AVID-CMA authors' ``.pth.tar`` files. ``avssl import ezvsl`` and ``avssl import slavc``:
the EZ-VSL and SLAVC authors' ``{'model': {'module.' + name: tensor}, 'epoch', ...}`` (:func:`import_peer`).

A released AVID-CMA file is a dict with ``epoch``, ``model`` (the state dict of their ``AV_Wrapper``, see
:mod:`avssl.models.released`), ``optimizer`` and ``train_criterion`` (the memory bank ``nce_average.view1_mem``
(video) and ``view2_mem`` (audio), the NCE estimate ``criterion.avg_exp_score``, and for CMA
``nce_average.positive_set``). The output is what ``avssl pretrain`` writes (config, model, and with
``with_memory`` the loss state), plus ``source``: the file's name and SHA-256, and the method and dataset
given or detected. Every command that takes a pretraining checkpoint takes it.

Memory: the file is opened with ``mmap=True`` where its format allows (files written by PyTorch >= 1.6), so
the memory bank (about 1.8 GB for AudioSet) is read only when it is kept, and never copied.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from .config import CONFIG_DIR, load_config, to_dict
from .models.avmodel import AVModel
from .models.peers import PEERS, PeerLayoutError, detect_peer, from_peer
from .models.released import ReleasedLayoutError, from_released
from .train.checkpoint import save_atomic, unreadable
from .train.configs import PretrainConfig

__all__ = ["ImportFailed", "import_avid_cma", "import_peer", "paper_config", "peer_config"]

METHODS = ("avid", "avid-cma")
DATASETS = ("kinetics", "audioset")
_BANK_SIZES = {232_067: "kinetics", 1_784_108: "audioset"}  # num_data of the released configs


class ImportFailed(ValueError):
    """The source cannot be imported; the message is one line naming the problem."""


def paper_config(method: str, dataset: str) -> Path:
    """The paper config of a released model: ``configs/pretrain/{avid|avid_cma}_r2plus1d18_{dataset}.yaml``."""
    return CONFIG_DIR / "pretrain" / f"{method.replace('-', '_')}_r2plus1d18_{dataset}.yaml"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("avssl")
    except PackageNotFoundError:
        return "unknown"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _load(path: Path) -> dict[str, Any]:
    """``torch.load`` with ``weights_only``; memory-mapped when the file's format allows it. A file that does not load
    is named for what it is (:func:`~avssl.train.checkpoint.unreadable`: a saved web page, a video, a truncated
    file)."""
    if not path.is_file():
        raise ImportFailed(f"{path}: no such file")
    try:
        try:
            ck = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as e:
            if "mmap" not in str(e) and "zipfile" not in str(e):
                raise
            ck = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (pre-1.6) format
    except Exception as e:  # noqa: BLE001 - any failure to read is reported as one line
        raise ImportFailed(unreadable(path, e)) from None
    if not isinstance(ck, dict):
        raise ImportFailed(f"{path}: expected a dict with 'model', got {type(ck).__name__}")
    return ck


def _state(ck: dict[str, Any], src: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's model state dict (its ``model``, or the dict itself); one line when there is none."""
    if "config" in ck and "model" in ck:
        raise ImportFailed(f"{src}: already an avssl checkpoint; commands take it as it is")
    state = ck.get("model", ck)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImportFailed(f"{src}: no model state dict (top-level keys: {', '.join(map(str, list(ck)[:6]))})")
    return state


def _detect(path: Path, criterion: dict[str, Any], method: str | None, dataset: str | None
            ) -> tuple[str, str | None, dict[str, str]]:
    """(method, dataset or None, where each came from): as given, else from the file name (the released names
    say ``AVID-CMA_Kinetics_...``), else from the criterion (a positive set means CMA; the bank's size)."""
    how = {}
    name = path.name.lower()
    if method:
        how["method"] = "given"
    elif re.search(r"avid[-_]cma|(^|[-_])cma[-_]", name) or "nce_average.positive_set" in criterion:
        method, how["method"] = "avid-cma", "file name" if "cma" in name else "checkpoint (positive sets)"
    else:
        method, how["method"] = "avid", "file name" if "avid" in name else "default"
    if dataset:
        how["dataset"] = "given"
    else:
        dataset = next((d for d in DATASETS if d in name), None)
        how["dataset"] = "file name"
        if dataset is None and "nce_average.view1_mem" in criterion:
            dataset = _BANK_SIZES.get(int(criterion["nce_average.view1_mem"].shape[0]))
            how["dataset"] = "memory bank size"
        if dataset is None:
            how["dataset"] = "unknown"
    return method, dataset, how


def _loss_state(criterion: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The released criterion as avssl's loss state: memory bank, the shared NCE estimate (as avssl's
    ``log_z = log(N * Z)`` for every term), positive sets for CMA."""
    try:
        video, audio = criterion["nce_average.view1_mem"], criterion["nce_average.view2_mem"]
    except KeyError:
        raise ImportFailed(f"{path}: --with-memory, but train_criterion holds no memory bank "
                           f"(keys: {', '.join(sorted(criterion)[:5]) or 'none'})") from None
    n = int(video.shape[0])
    z = float(criterion.get("criterion.avg_exp_score", torch.tensor(-1.0)))
    log_z = math.log(z) + math.log(n) if z > 0 else float("nan")
    state = {"memory.video": video, "memory.audio": audio, "log_z": torch.full((4,), log_z)}
    if "nce_average.positive_set" in criterion:
        state["positives"] = criterion["nce_average.positive_set"].long()
    return state


def import_avid_cma(src: str | os.PathLike, output: str | os.PathLike, config: str | os.PathLike | None = None,
                    with_memory: bool = False, method: str | None = None, dataset: str | None = None
                    ) -> dict[str, Any]:
    """Write ``output``, an avssl pretraining checkpoint of the released model in ``src``; returns its
    ``source`` record. Raises :class:`ImportFailed` (nothing is written) for an unreadable file, another
    model, or missing or unexpected tensors."""
    src, output = Path(src), Path(output)
    ck = _load(src)
    state = _state(ck, src)
    peer = detect_peer(state)
    if peer is not None:
        raise ImportFailed(f"{src}: {_a(_PEER_NAMES[peer])} checkpoint, not AVID-CMA's: use avssl import {peer}")
    criterion = ck.get("train_criterion") or {}
    method, dataset, how = _detect(src, criterion, method, dataset)
    cfg_path = Path(config) if config else paper_config(method, dataset or "kinetics")
    cfg = load_config(PretrainConfig, cfg_path)
    with torch.device("meta"):
        expected = AVModel(cfg.model).state_dict()
    try:
        model = {k: v.contiguous() for k, v in from_released(state, expected).items()}
    except ReleasedLayoutError as e:
        raise ImportFailed(f"{src}: {e} (for {cfg_path.name})") from None
    loss = _loss_state(criterion, src) if with_memory else None
    source = {"file": src.name, "sha256": _sha256(src), "method": method, "dataset": dataset, "detected": how,
              "epoch": int(ck["epoch"]) if isinstance(ck.get("epoch"), (int, float)) else None,
              "config": str(cfg_path), "memory_slots": int(loss["memory.video"].shape[0]) if loss else None,
              "imported_by": f"avssl {_version()}"}
    out = {"config": to_dict(cfg), "model": model, "step": 0, "epoch": 0, "source": source}
    if loss is not None:
        out["loss"] = loss
    save_atomic(out, output)
    return source


_PEER_NAMES = {"ezvsl": "EZ-VSL", "slavc": "SLAVC"}


def _a(name: str) -> str:
    """``name`` with its article ("an EZ-VSL", "a SLAVC")."""
    return f"{'an' if name[0] in 'AEIO' else 'a'} {name}"


def peer_config(peer: str) -> Path:
    """The config an imported peer's checkpoint records: its training protocol,
    ``configs/pretrain/{ezvsl|slavc}_resnet18_224_vggsound.yaml``."""
    return CONFIG_DIR / "pretrain" / f"{peer}_resnet18_224_vggsound.yaml"


def import_peer(peer: str, src: str | os.PathLike, output: str | os.PathLike, config: str | os.PathLike | None = None,
                momentum: bool = False) -> dict[str, Any]:
    """Write ``output``, an avssl pretraining checkpoint of the EZ-VSL or SLAVC model in ``src`` (``peer``: "ezvsl"
    or "slavc"); returns its ``source`` record. ``momentum`` (SLAVC): embed and localize with the momentum encoders
    (their test script uses the base ones, the default). Raises :class:`ImportFailed` (nothing is written) for an
    unreadable file, the other method's file, another model, or missing or unexpected tensors."""
    if peer not in PEERS:
        raise ImportFailed(f"unknown method {peer!r} ({', '.join(PEERS)})")
    src, output = Path(src), Path(output)
    ck = _load(src)
    state = _state(ck, src)
    found = detect_peer(state)
    if found is None:
        what = "an AVID-CMA checkpoint (avssl import avid-cma)" if any(
            k.removeprefix("module.").startswith(("video_model.", "audio_model.")) for k in state) else "another model"
        raise ImportFailed(f"{src}: not {_a(_PEER_NAMES[peer])} checkpoint: it holds {what}")
    if found != peer:
        raise ImportFailed(f"{src}: {_a(_PEER_NAMES[found])} checkpoint, not {_PEER_NAMES[peer]}'s: use avssl import "
                           f"{found}")
    if momentum and peer != "slavc":
        raise ImportFailed("--momentum: only SLAVC keeps momentum encoders")
    cfg_path = Path(config) if config else peer_config(peer)
    overrides = [f"model.use_momentum={str(momentum).lower()}"] if peer == "slavc" else []
    cfg = load_config(PretrainConfig, cfg_path, overrides)
    with torch.device("meta"):
        expected = AVModel(cfg.model).state_dict()
    try:
        model = {k: v.contiguous() for k, v in from_peer(peer, state, expected).items()}
    except PeerLayoutError as e:
        raise ImportFailed(f"{src}: {e} (for {cfg_path.name})") from None
    source = {"file": src.name, "sha256": _sha256(src), "method": peer,
              "epoch": int(ck["epoch"]) if isinstance(ck.get("epoch"), (int, float)) else None,
              "config": str(cfg_path), "momentum": bool(momentum), "imported_by": f"avssl {_version()}"}
    save_atomic({"config": to_dict(cfg), "model": model, "step": 0, "epoch": 0, "source": source}, output)
    return source
