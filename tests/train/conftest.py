"""A small collection the training tests share: 12 synthetic 1.5 s clips and their manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from avssl.data.collection import build_manifest
from avssl.data.synthetic import SynthSpec, synthesize


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("coll")
    synthesize(d / "media", 12, seed=1, spec=SynthSpec(width=64, height=64, fps=16, duration=1.5, sample_rate=16000))
    build_manifest(d / "media", d / "manifest.jsonl", progress=False)
    return d
