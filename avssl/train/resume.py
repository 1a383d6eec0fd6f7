"""What a checkpoint knows of the run that wrote it, and where a run that resumes from it continues.

``last.pt`` records the run's shape (processes, batch per process, steps per epoch), the samples it has seen,
a hash of the config's training-relevant values, and every process's random number generators (CPU and
CUDA). A run resumed on another number of processes or another batch continues at the same number of
samples seen into the same epoch (so the epoch and the learning rate are where they were; the memory bank is
global and unaffected); a changed training value stops it with one line naming the keys, unless
``run.allow_config_change`` is set.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch

from .. import distributed as dist
from ..config import ConfigError

__all__ = ["OPERATIONAL_KEYS", "RunShape", "changed_values", "config_hash", "gather_rng_states", "resume_position",
           "set_rng_state"]

# Keys that change how a run is carried out, not what it learns: they may differ between a run and its resume
# (another cluster, other paths, other loader settings). A prefix ending in "." covers a section.
OPERATIONAL_KEYS = (
    "run.progress", "run.log_every", "run.tensorboard", "run.keep", "run.checkpoint_every", "run.save_every_steps",
    "run.max_steps", "run.device", "run.channels_last", "run.init_from", "run.allow_config_change",
    "data.manifest", "data.root", "data.shards", "data.shards_index", "data.annotations", "data.test_annotations",
    "data.num_workers", "data.decoder_threads", "data.preprocess", "data.cache",
    "data.cache_dir", "data.cache_max_gb", "data.on_error", "data.max_retries", "localize.", "eval.",
    "run.keep_best", "run.on_divergence", "run.on_collapse", "run.collapse_std", "run.collapse_window",
    "run.compile", "run.time_phases", "run.dist_timeout_min",
)
TRAINING_KEYS = ("eval.holdout",)  # under an operational section, but what the run trains on


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _relevant(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _flat(config).items()
            if k in TRAINING_KEYS or not any(k == op or (op.endswith(".") and k.startswith(op)) for op in OPERATIONAL_KEYS)}


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (16 hex digits) of a config's training-relevant values (:data:`OPERATIONAL_KEYS` left out)."""
    return hashlib.sha256(json.dumps(_relevant(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def changed_values(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of each training-relevant value that differs between two configs (a
    key only one of them has gets ``"<absent>"`` on the other side)."""
    a, b = _relevant(old), _relevant(new)
    return [(k, a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>")]


@dataclass(frozen=True)
class RunShape:
    """How a run is laid out: processes, batch per process and the steps of an epoch that follow."""

    world: int
    batch: int
    steps_per_epoch: int

    @property
    def global_batch(self) -> int:
        return self.world * self.batch

    def describe(self) -> str:
        return f"{self.world} process(es) x {self.batch}"


def resume_position(ck: dict[str, Any], now: RunShape) -> tuple[int, str]:
    """(the step this run continues at, a note when the checkpoint's run had another shape). The position is
    the samples seen into the checkpoint's epoch; a part of a batch that does not divide evenly is seen again
    (fewer samples than one batch). Raises ConfigError where a checkpoint cannot be placed."""
    step = int(ck["step"])
    if "world_size" not in ck:  # written before checkpoints recorded their run's shape
        return step, ""
    then = RunShape(int(ck["world_size"]), int(ck["batch_size"]), int(ck["steps_per_epoch"]))
    if then == now:
        return step, ""
    if then.steps_per_epoch <= 0:
        raise ConfigError(f"the checkpoint records {then.steps_per_epoch} steps per epoch: it cannot be placed")
    epoch, within = divmod(step, then.steps_per_epoch)
    samples = within * then.global_batch
    new_step = epoch * now.steps_per_epoch + samples // now.global_batch
    again = samples % now.global_batch
    note = (f"the checkpoint's run had {then.describe()} ({then.steps_per_epoch} steps per epoch), this one "
            f"{now.describe()} ({now.steps_per_epoch}): {samples} samples into epoch {epoch} is step {new_step}"
            + (f"; {again} samples of the epoch are seen again" if again else ""))
    return new_step, note


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng_states(device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every process's generator states (CPU, and CUDA on a GPU), in rank order; a collective: every process
    calls it."""
    return dist.gather_lists([_rng_state(device)])


def set_rng_state(ck: dict[str, Any], rank: int, world: int, device: torch.device) -> bool:
    """Restore this process's generators from a checkpoint; returns False where they cannot be this process's
    own (another number of processes: rank 0's are used; a CUDA state from a CPU run: left as seeded)."""
    states = ck.get("rng")
    if states is None:  # older checkpoints: the CPU generator of rank 0
        torch.set_rng_state(ck["rng_torch"])
        return world == 1
    own = len(states) == world
    state = states[rank if own else 0]
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda":
        if "cuda" not in state:
            return False
        torch.cuda.set_rng_state(state["cuda"], device)
    return own
