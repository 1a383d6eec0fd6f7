"""`avssl report`: curves of runs (finished and still going) on one page, their config differences, maps."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
import yaml
from torchvision.io import write_png

from avssl.cli import main
from avssl.report import eval_share, load_run, run_names, write_report


def _run(folder: Path, lr: float, steps: int, finished: bool, maps: bool = False) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"optim": {"lr": lr, "epochs": 4}, "run": {"seed": 0}}))
    rows = []
    for s in range(1, steps + 1):
        rows.append({"kind": "train", "step": s, "epoch": (s - 1) // 5, "epochs": s / 5, "loss": 5 - s / 10, "lr": lr,
                     "clips_per_s": 100.0, "seconds": s * 0.5, "time": time.time()})
        if s % 5 == 0:
            row = {"kind": "eval", "epoch": s // 5, "step": s, "retrieval_v2a_R@1": s / 40, "seconds": 0.1}
            if maps:
                (folder / "eval").mkdir(exist_ok=True)
                write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(folder / "eval" / f"maps_epoch_{s // 5:04d}.png"))
                row["maps"] = f"eval/maps_epoch_{s // 5:04d}.png"
            rows.append(row)
    rows.append({"kind": "event", "event": "non-finite loss", "step": 3, "epoch": 0, "value": float("nan"),
                 "action": "warn"})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not finished:
        text += '{"kind": "train", "step": 99, "lo'  # a line being written
    (folder / "metrics.jsonl").write_text(text)
    if finished:
        (folder / "summary.json").write_text(json.dumps({"steps": steps, "best": {
            "figure": "retrieval_v2a_R@1", "value": 0.5, "epoch": 4, "step": steps}}))
    return folder


def test_the_page_shows_curves_differences_status_and_maps(tmp_path):
    a = _run(tmp_path / "seed0", 0.002, 20, finished=True, maps=True)
    b = _run(tmp_path / "lr_high", 0.01, 7, finished=False)
    page = write_report([a, b], tmp_path / "report").read_text()
    assert "finished: 20 steps" in page and "running: step 7" in page
    assert "<td>optim.lr</td><td>0.002</td><td>0.01</td>" in page  # the config value that differs
    assert "non-finite loss" in page and "retrieval_v2a_R@1 0.500 (epoch 4)" in page
    links = [unquote(x) for x in re.findall(r'(?:src|href)="([^"]+)"', page)]
    assert {"train_loss.png", "train_lr.png", "eval_retrieval_v2a_R_1.png"} <= set(links)
    assert all((tmp_path / "report" / link).exists() for link in links)
    assert sum(1 for link in links if link.startswith("maps/")) == 4
    assert len(load_run(b)["rows"]["train"]) == 7  # the half-written line is left for the next reading


def test_report_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--output-dir", str(tmp_path / "r")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium on this machine (Debian: apt-get install "
                                                              "chromium)")
def test_the_page_renders_in_a_headless_browser(tmp_path):
    a = _run(tmp_path / "seed0", 0.002, 20, finished=True, maps=True)
    page = write_report([a], tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,900", f"--screenshot={shot}",
                    page.as_uri()], capture_output=True, timeout=120)
    img = torch.from_numpy(np.array(__import__("PIL.Image", fromlist=["Image"]).open(shot).convert("RGB")))
    assert img.shape[0] == 900 and (img < 200).any()  # something drawn on the white page


def test_the_evaluation_share_counts_each_evaluation_once():
    def run(rows):
        return {"rows": {"train": [r for r in rows if r[0] == "t"], "eval": [r for r in rows if r[0] == "e"]}}

    def t(step, seconds):
        return {0: "t", "step": step, "seconds": seconds}

    def e(step, seconds):
        return {0: "e", "step": step, "seconds": seconds}

    # eval before step 1 (not in the clock), at step 10 (inside the step-20 row's 20 s), at step 20 (after it)
    assert eval_share(run([e(0, 1), t(10, 9), e(10, 2), t(20, 20), e(20, 3)])) == pytest.approx(6 / 24)
    # resumed after step 20: its clock restarts; the evaluations of the first process are not this one's
    resumed = [e(0, 1), t(10, 9), e(10, 2), t(20, 20), t(30, 8), e(30, 4), t(40, 18)]
    assert eval_share(run(resumed)) == pytest.approx(4 / 18)
    assert eval_share(run([t(10, 9)])) is None


def test_runs_in_folders_of_the_same_name_are_told_apart():
    assert run_names([Path("/x/s0/run"), Path("/x/s1/run"), Path("/x/loc")]) == ["s0/run", "s1/run", "loc"]
    assert run_names([Path("/a/b/run"), Path("/c/b/run")]) == ["a/b/run", "c/b/run"]
    assert len(set(run_names([Path("/x/run"), Path("/x/run")]))) == 1  # the same folder twice: ends, one name


def test_rates_per_interval_stopped_runs_eta_and_readable_titles(tmp_path, monkeypatch):
    from avssl import report

    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"optim": {"epochs": 10}, "run": {"max_steps": None}}))
    t0 = 1_000_000.0
    # the first interval holds a 30 s cache build; then 100 clips every 1 s; rows every 10 steps of 10 clips
    rows = [{"kind": "train", "step": 10 * k, "epochs": k / 2, "clips": 100 * k, "seconds": 30.0 + (k - 1),
             "clips_per_s": 100 * k / (30.0 + (k - 1)), "time": t0 + 30 + (k - 1), "loss": 1.0} for k in range(1, 6)]
    rows.append({"kind": "eval", "epoch": 2, "step": 40, "knn_audio_top5": 0.5, "seconds": 0.1})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_run(run)
    assert [r.get("interval_clips_per_s") for r in loaded["rows"]["train"]][1:] == [100.0] * 4  # not 5 -> 24
    assert report._status(loaded, now=t0 + 35) == "running: step 50/200, ETA 0m15s, last logged 1 s ago"
    assert report._status(loaded, now=t0 + 400).startswith("stopped? step 50/200, nothing logged for 6m06s")
    captured = []
    monkeypatch.setattr(report, "_plot", lambda runs, kind, key, label, path: captured.append(label) or False)
    write_report([run], tmp_path / "page")
    assert "held out: kNN on audio embeddings, top-5" in captured and "clips / s (each log interval)" in captured


def test_chance_is_drawn_and_written_beside_retrieval(tmp_path):
    run = _run(tmp_path / "r", 0.002, 10, finished=True)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "eval", "epoch": 3, "step": 15, "retrieval_v2a_R@1": 0.4,
                            "retrieval_chance_R@1": 0.25, "retrieval_note": "R@5 left out: with 4 clips ...",
                            "seconds": 0.1}) + "\n")
    page = write_report([run], tmp_path / "report").read_text()
    assert "retrieval_v2a_R@1 0.400 (chance 0.250)" in page and "R@5 left out" in page
    assert "eval_retrieval_chance_R_1.png" not in page  # chance is a line on the figure's plot, not a figure


def test_a_row_naming_a_file_outside_its_run_or_markup_is_neither_copied_nor_run(tmp_path):
    secret = tmp_path / "secret.png"
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(secret))
    run = _run(tmp_path / "r", 0.002, 5, finished=True)
    with open(run / "metrics.jsonl", "a") as f:
        for name in (str(secret), "../secret.png"):
            f.write(json.dumps({"kind": "eval", "epoch": "<script>alert(1)</script>", "step": 5, "maps": name,
                                "seconds": 0.1}) + "\n")
        f.write(json.dumps({"kind": "event", "event": "x", "step": "<b>5</b>", "epoch": "<i>", "action": "warn"}) + "\n")
    page = write_report([run], tmp_path / "report").read_text()
    assert not list((tmp_path / "report" / "maps").glob("*secret*")) and "<script>alert" not in page
    assert "<b>5</b>" not in page and "&lt;b&gt;5&lt;/b&gt;" in page


def test_report_of_a_missing_folder_is_one_line_without_config_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"avssl report: {tmp_path / 'nowhere'}: no such run folder"]
    assert not (tmp_path / "r").exists()
