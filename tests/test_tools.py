"""The measuring tools run (on tiny stand-ins) and measure what they say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from avssl.data.entries import load_entries

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_scale_measures_entries_against_a_list_of_dicts(tmp_path):
    bench = _tool("bench_scale")
    m = tmp_path / "standin.jsonl"
    bench.write_standin_manifest(m, 300)
    entries = load_entries(m)
    assert len(entries) == 300 and entries[7]["video"]["width"] == 640 and entries[7]["path"].endswith(".mp4")
    ours, plain = bench._load(str(m), "entries"), bench._load(str(m), "list")
    for row in (ours, plain):
        assert row["load_s"] > 0 and row["worker_private_mb"] > 0 and row["worker_touch_s"] > 0
    assert ours["table_mb"] > 0 and plain["table_mb"] is None
    # video and audio memories, float32, and the NCE estimate
    assert abs(bench._bank(1000)["bank_paper_mb"] - 1000 * 128 * 4 * 2 / 1e6) < 1e-3
