"""Readers of the official annotation files of labeled datasets, each returning a :class:`LabeledSet`:
Kinetics-400/600/700 CSVs, UCF-101 and HMDB-51 split lists, ESC-50's meta CSV, a generic ``path label``
list and a class-per-folder layout. Files that are listed but absent are counted and listed, not fatal.
:func:`avssl.data.labeled.read_labeled` picks the reader by name."""

from __future__ import annotations

from .base import LabeledSet
from .esc50 import read_esc50
from .generic import read_folders, read_list
from .hmdb51 import read_hmdb51
from .kinetics import read_kinetics
from .ucf101 import read_ucf101

__all__ = ["LabeledSet", "read_esc50", "read_folders", "read_hmdb51", "read_kinetics", "read_list", "read_ucf101"]
