"""``avssl import avid-cma``: the authors' released ``.pth.tar`` files -> avssl pretraining checkpoints.

A released file is a dict with ``epoch``, ``model`` (the state dict of their ``AV_Wrapper``, see
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

from ..config import CONFIG_DIR, load_config, to_dict
from ..models.avmodel import AVModel
from ..models.released import ReleasedLayoutError, from_released
from .checkpoint import save_atomic, unreadable
from .configs import PretrainConfig

__all__ = ["ImportFailed", "import_avid_cma", "paper_config"]

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
    """``torch.load`` with ``weights_only``; memory-mapped when the file's format allows it."""
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
    if "config" in ck and "model" in ck:
        raise ImportFailed(f"{src}: already an avssl checkpoint; commands take it as it is")
    state = ck.get("model", ck)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImportFailed(f"{src}: no model state dict (top-level keys: {', '.join(map(str, list(ck)[:6]))})")
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
