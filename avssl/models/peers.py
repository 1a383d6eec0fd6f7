"""The EZ-VSL and SLAVC authors' checkpoint layouts -> avssl's :class:`AVModel` (names and reshapes only).

Their models (stoneMo/EZ-VSL and stoneMo/SLAVC, ``model.py``), wrapped in DistributedDataParallel (every name starts
with ``module.``): ``imgnet`` (torchvision's ResNet-18 without pooling and classifier), ``img_proj`` (a 1x1
convolution to 512; SLAVC: ``img_proj1`` and ``img_proj2``), ``audnet`` (a one-channel ResNet-18, max-pooled),
``aud_proj`` (a linear layer; SLAVC: ``aud_proj1``, ``aud_proj2``), and for SLAVC the momentum copies of all of them
(``momentum_imgnet``, ``momentum_img_proj1``, ...). avssl's model keeps torchvision's names under ``video.net`` and
``audio.net``, its heads are linear layers on channels-last maps (a 1x1 convolution's kernel is the linear layer's
matrix), and the second projection is the head's ``mlp2``.
"""

from __future__ import annotations

import torch

from .layout import LayoutError, map_state, rename

__all__ = ["PEERS", "PeerLayoutError", "detect_peer", "from_peer", "to_peer"]

PEERS = ("ezvsl", "slavc")

_RULES = [  # (their name, avssl's), as regular expressions; the first match wins
    (r"(momentum_)?imgnet\.(.+)", lambda m: f"{_m(m[1])}video.net.{m[2]}"),
    (r"(momentum_)?audnet\.(.+)", lambda m: f"{_m(m[1])}audio.net.{m[2]}"),
    (r"(momentum_)?(img|aud)_proj([12]?)\.(weight|bias)",
     lambda m: f"{_m(m[1])}{'video' if m[2] == 'img' else 'audio'}_head.{'mlp2' if m[3] == '2' else 'mlp'}.0.{m[4]}"),
]


def _m(prefix: str | None) -> str:
    return "momentum." if prefix else ""


class PeerLayoutError(LayoutError):
    """The tensors do not form the peer's model: names left over or missing (a few of each)."""

    def __init__(self, peer: str, unexpected: list[str], missing: list[str]) -> None:
        super().__init__(f"the released {_NAMES[peer]} model", unexpected, missing)


_NAMES = {"ezvsl": "EZ-VSL", "slavc": "SLAVC"}


def detect_peer(state: dict[str, torch.Tensor]) -> str | None:
    """Which peer's layout a state dict has, by the names only SLAVC's holds (two projections, momentum copies):
    "slavc", "ezvsl", or None when it is neither (no ``imgnet``/``audnet``)."""
    names = {k.removeprefix("module.") for k in state}
    if not any(n.startswith("imgnet.") for n in names) or not any(n.startswith("audnet.") for n in names):
        return None
    if any(n.startswith(("img_proj1.", "momentum_")) for n in names):
        return "slavc"
    return "ezvsl" if any(n.startswith("img_proj.") for n in names) else None


def _matrix(name: str, tensor: torch.Tensor, want: tuple[int, ...]) -> torch.Tensor:
    """A 1x1 convolution's kernel as the linear layer's matrix it is."""
    return tensor[:, :, 0, 0] if tensor.dim() == 4 and tensor.shape[2:] == (1, 1) and len(want) == 2 else tensor


def from_peer(peer: str, state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ``peer`` ("ezvsl" or "slavc") ``model`` state dict (with or without ``module.``) onto the names of
    ``expected`` (an :class:`AVModel`'s state dict); raises :class:`PeerLayoutError` unless every tensor maps to
    one of ``expected`` and every one of ``expected`` is given, with the same shapes (1x1 kernels as matrices)."""
    try:
        return map_state(state, expected, lambda n: rename(_RULES, n), _matrix, "")
    except LayoutError as e:
        raise PeerLayoutError(peer, e.unexpected, e.missing) from None


def to_peer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`from_peer`: an :class:`AVModel` state dict of a peer's architecture under the peer's
    names, with ``module.`` (image projections as 1x1 kernels): for tests and for sharing with their code."""
    out = {}
    slavc = any(k.startswith("video_head.mlp2.") for k in state)
    for name, tensor in state.items():
        mom = "momentum_" if name.startswith("momentum.") else ""
        rest = name.removeprefix("momentum.")
        if rest.startswith(("video.net.", "audio.net.")):
            net = "imgnet" if rest.startswith("video.") else "audnet"
            out[f"module.{mom}{net}.{rest.split('.', 2)[2]}"] = tensor
            continue
        head, branch, _, param = rest.split(".")  # video_head.mlp.0.weight
        proj = ("img" if head == "video_head" else "aud") + "_proj" + (("2" if branch == "mlp2" else "1") if slavc
                                                                      else "")
        if head == "video_head" and param == "weight":
            tensor = tensor[:, :, None, None]
        out[f"module.{mom}{proj}.{param}"] = tensor
    return out
