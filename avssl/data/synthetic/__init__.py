"""Media made from a seed, with ground truth: procedural sounding-object clips (:mod:`.clips`), a labeled
action set in the UCF-101 layout (:mod:`.actions`), and the composed localization benchmark (:mod:`.compose`:
cut-outs with their sounds pasted on photos, with boxes in the VGG-SS format)."""

from __future__ import annotations

from .actions import ACTIONS, ActionSpec, synthesize_actions
from .clips import CLASSES, SoundClass, SynthSpec, generate_clip, synthesize
from .compose import ComposeSpec, compose

__all__ = ["ACTIONS", "CLASSES", "ActionSpec", "ComposeSpec", "SoundClass", "SynthSpec", "compose", "generate_clip",
           "synthesize", "synthesize_actions"]
