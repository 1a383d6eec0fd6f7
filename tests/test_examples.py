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
