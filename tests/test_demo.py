from __future__ import annotations

import json

import pytest

from avssl.cli import main

ARGS = ["--num-clips", "20", "--held-out", "8", "--set", "optim.epochs=1", "--set", "optim.batch_size=6",
        "--set", "data.num_workers=0", "--set", "run.progress=false", "--set", "loss.num_negatives=8",
        "--localize-set", "optim.epochs=1", "--localize-set", "optim.batch_size=6",
        "--localize-set", "data.num_workers=0", "--localize-set", "run.progress=false"]


def test_demo_runs_end_to_end_and_reports_both_models(tmp_path, capsys):
    rc = main(["demo", "--output-dir", str(tmp_path), *ARGS])
    assert rc == 0
    res = json.loads((tmp_path / "demo_results.json").read_text())
    assert res["train_clips"] == 12 and res["heldout_clips"] == 8 and res["pretrain"]["steps"] == 2
    for model in ("random_init", "pretrained"):
        r = res[model]
        assert set(r["video_to_audio"]) == {"R@1", "R@5"} and 0 <= r["linear_probe"]["accuracy"] <= 1
    text = (tmp_path / "summary.txt").read_text()
    assert "linear probe" in text and "random init" in text and text in capsys.readouterr().out
    loc = res["localization"]
    assert loc["median"]["model"]["num_samples"] == 8 and 0 <= loc["adaptive"]["centre"]["auc"] <= 1
    assert "centre prior" in text and loc["index"] in text and (tmp_path / "localize" / "index.html").exists()
    assert len(list((tmp_path / "localize").glob("*/overlay.mp4"))) == 4
    assert loc["listening"]["num_samples"] == 8 and "does the map listen?" in text
    assert loc["pretrain"]["steps"] == 2 and (tmp_path / "localize_run" / "last.pt").exists()
    # both runs were evaluated while they trained (before and after their epoch), and the report draws them
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in evals if r.get("kind") == "eval"] == [0]  # every 10 epochs, and before the first
    assert {"retrieval_v2a_R@1", "knn_top1"} <= set(next(r for r in evals if r.get("kind") == "eval"))
    loc_evals = [json.loads(x) for x in (tmp_path / "localize_run" / "metrics.jsonl").read_text().splitlines()]
    loc_evals = [r for r in loc_evals if r.get("kind") == "eval"]  # scored on the held-out clips' boxes
    assert loc_evals and all(0 <= r["loc_auc"] <= 1 for r in loc_evals)
    assert res["report"] in text and (tmp_path / "report" / "train_loss.png").exists()


@pytest.mark.slow
def test_a_second_demo_run_reuses_the_media_and_the_finished_run(tmp_path, capsys):
    assert main(["demo", "--output-dir", str(tmp_path), *ARGS]) == 0
    assert "synthesizing" in capsys.readouterr().out
    # A second run reuses the media and resumes the finished run instead of starting over.
    assert main(["demo", "--output-dir", str(tmp_path), *ARGS]) == 0
    assert "synthesizing" not in capsys.readouterr().out
