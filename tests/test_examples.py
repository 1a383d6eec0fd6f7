from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_decode_example_runs():
    res = subprocess.run([sys.executable, str(ROOT / "examples/decode_a_clip.py")], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "frames (8, 112, 112, 3) uint8" in res.stdout and "log-mel (80, 201)" in res.stdout


@pytest.mark.slow
def test_pretrain_example_runs(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples/pretrain_and_retrieve.py"), str(tmp_path), "1"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "video -> audio {'R@1'" in res.stdout


def test_embed_and_search_example_runs(tmp_path):
    """The example on a few synthetic clips and a model trained for a step (what it prints, not how well)."""
    from tests.conftest import small_collection, train_small

    manifest = small_collection(tmp_path, 3, seed=0, width=64, height=48, fps=8, duration=2.0, sample_rate=16000)
    train_small(manifest, tmp_path / "run", "optim.batch_size=3", "run.max_steps=1", "loss.num_negatives=2")
    res = subprocess.run([sys.executable, str(ROOT / "examples/embed_and_search.py"), str(tmp_path / "run/last.pt"),
                          str(tmp_path / "media"), str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [x for x in res.stdout.splitlines() if "its picture sounds like" in x]
    assert len(lines) == 3 and lines[0].startswith("clip_00000: its picture sounds like clip_")
