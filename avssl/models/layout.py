"""Another implementation's state dict -> avssl's model, by rules on names: what the importers of released
checkpoints (:mod:`avssl.models.released`, :mod:`avssl.models.peers`) share."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["LayoutError", "map_state", "rename"]


class LayoutError(ValueError):
    """The tensors do not form ``what``: names left over or missing (a few of each)."""

    def __init__(self, what: str, unexpected: list[str], missing: list[str]) -> None:
        self.unexpected, self.missing = unexpected, missing
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})")
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        super().__init__(f"not {what}: " + "; ".join(parts))


def rename(rules: list[tuple[str, Callable[[re.Match], Any]]], name: str) -> str | None:
    """The avssl name of ``name`` by the first rule whose pattern matches it whole (None: no rule, or the rule's)."""
    for pattern, build in rules:
        m = re.fullmatch(pattern, name)
        if m:
            return build(m)
    return None


def map_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], name: Callable[[str], str | None],
              tensor: Callable[[str, torch.Tensor, tuple[int, ...]], torch.Tensor], what: str
              ) -> dict[str, torch.Tensor]:
    """``state`` (names with or without DDP's ``module.``) under the names of ``expected``: ``name`` gives each
    tensor's avssl name, ``tensor(avssl_name, tensor, expected_shape)`` its layout there (a transpose, a reshape).
    Raises :class:`LayoutError` unless every tensor maps to one of ``expected`` with its shape, and every one of
    ``expected`` is given."""
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, t in state.items():
        target = name(key.removeprefix("module."))
        if target is None or target not in expected:
            unexpected.append(key)
            continue
        want = tuple(expected[target].shape)
        t = tensor(target, t, want)
        if tuple(t.shape) != want:
            unexpected.append(f"{key} {tuple(t.shape)} (expected {want})")
            continue
        out[target] = t
    missing = sorted(set(expected) - set(out))
    if unexpected or missing:
        raise LayoutError(what, sorted(unexpected), missing)
    return out
