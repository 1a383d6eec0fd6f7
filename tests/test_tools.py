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


def test_tile_pngs_puts_each_image_in_its_cell(tmp_path, monkeypatch):
    import sys

    import torch
    from torchvision.io import read_image, write_png

    for k in range(3):
        write_png(torch.full((3, 4, 6), 50 * (k + 1), dtype=torch.uint8), str(tmp_path / f"{k}.png"))
    monkeypatch.setattr(sys, "argv", ["tile_pngs", str(tmp_path / "out.png"),
                                      *(str(tmp_path / f"{k}.png") for k in range(3)), "--columns", "2"])
    _tool("tile_pngs").main()
    out = read_image(str(tmp_path / "out.png"))
    assert out.shape == (3, 8, 12)
    assert out[0, 0, 0] == 50 and out[0, 0, 6] == 100 and out[0, 4, 0] == 150 and out[0, 4, 6] == 255  # blank cell


def test_every_localization_proof_variant_is_a_valid_config():
    # A typo in a variant's overrides would only show after the composing and the runs before it.
    from avssl.config import load_config
    from avssl.train.configs import PretrainConfig

    proof = _tool("localization_proof")
    for name, (config, overrides) in proof.VARIANTS.items():
        cfg = load_config(PretrainConfig, config, overrides)
        assert cfg.optim.epochs > 0, name
    assert load_config(PretrainConfig, *proof.VARIANTS["frame_hard"]).loss.frame_negatives == 0.5
