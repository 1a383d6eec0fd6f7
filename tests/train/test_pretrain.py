from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avssl.cli import main
from avssl.config import load_config
from avssl.data.collection import read_manifest, write_jsonl
from avssl.train.checkpoint import load_checkpoint
from avssl.train.pretrain import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"


def _cfg(manifest: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, SMALL, [
        f"data.manifest={manifest}", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=2",
        "run.progress=false", "run.log_every=1", "loss.num_negatives=8", "run.device=cpu", *extra,
    ])  # the loop's logic, bit-exact on the CPU (tests/train/test_cuda.py covers CUDA)


@pytest.mark.parametrize("workers, kind", [(0, "avid"), (2, "avid"), (0, "cma")])
def test_resumed_run_equals_uninterrupted_run(collection, tmp_path, workers, kind):
    m = collection / "manifest.jsonl"
    w = [f"data.num_workers={workers}", f"loss.kind={kind}", "loss.cma_topk=3"]
    full = pretrain(_cfg(m, "run.max_steps=5", *w), tmp_path / "full")
    part = pretrain(_cfg(m, "run.max_steps=4", *w), tmp_path / "resumed")  # stops inside epoch 2
    assert part["steps"] == 4
    resumed = pretrain(_cfg(m, "run.max_steps=5", *w), tmp_path / "resumed")  # picks up last.pt
    assert full["steps"] == resumed["steps"] == 5
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key in ("model", "loss"):
        for name, t in a[key].items():
            torch.testing.assert_close(t, b[key][name], rtol=0, atol=0, equal_nan=True, msg=f"{key}.{name} differs")
    assert full["final_loss"] == resumed["final_loss"]


def test_batch_preprocessing_on_the_device_trains_like_per_item_preprocessing(collection, tmp_path):
    m = collection / "manifest.jsonl"
    jitter = ["data.video_aug.jitter_prob=1.0", "data.audio_aug.time_masks=1", "run.max_steps=3"]
    worker = pretrain(_cfg(m, "data.preprocess=worker", *jitter), tmp_path / "worker")
    device = pretrain(_cfg(m, "data.preprocess=device", *jitter), tmp_path / "device")
    losses = [[json.loads(x)["loss"] for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
              for d in ("worker", "device")]
    assert worker["steps"] == device["steps"] == 3
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_run_folder_holds_config_metrics_and_checkpoints(collection, tmp_path):
    out = tmp_path / "run"
    summary = pretrain(_cfg(collection / "manifest.jsonl", "run.checkpoint_every=1", "run.keep=1"), out)
    assert summary["steps"] == 6  # 2 epochs of 12 // 4 batches
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7)) and all("v2a" in r and "clips_per_s" in r for r in rows)
    assert sorted(p.name for p in out.glob("*.pt")) == ["epoch_0002.pt", "last.pt"]
    ck = torch.load(out / "last.pt", weights_only=True)  # plain types and tensors only
    assert ck["step"] == 6 and ck["config"]["optim"]["batch_size"] == 4
    assert ck["loss"]["memory.video"].shape == (12, 32)
    assert load_config(PretrainConfig, out / "config.yaml").optim.batch_size == 4
    assert not list(out.glob(".*tmp"))


def test_broken_files_are_skipped_and_reported(collection, tmp_path):
    rows = read_manifest(collection / "manifest.jsonl")
    broken = tmp_path / "broken.mp4"
    shutil.copy(rows[0]["path"], broken)
    broken.write_bytes(broken.read_bytes()[:2000])
    rows[0] = dict(rows[0], path=str(broken))
    write_jsonl(tmp_path / "m.jsonl", rows)
    summary = pretrain(_cfg(tmp_path / "m.jsonl", "optim.epochs=1"), tmp_path / "run")
    assert summary["steps"] == 3 and summary["skipped_files"] >= 1
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert skipped and all(s["path"] == str(broken) and s["reason"] for s in skipped)


def test_cma_run_from_a_folder(collection, tmp_path):
    summary = pretrain(_cfg(Path("unused"), "data.manifest=null", f"data.root={collection / 'media'}",
                            "loss.kind=cma", "loss.cma_topk=3", "optim.epochs=1"), tmp_path / "run")
    assert summary["steps"] == 3
    assert (tmp_path / "run" / "manifest.jsonl").exists()
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ck["loss"]["positives"] >= 0).all()


def test_config_mistakes_are_clear_errors(collection, tmp_path, capsys):
    rc = main(["pretrain", "--config", str(SMALL), "--set", "optim.bogus=1", "--output-dir", str(tmp_path)])
    assert rc == 2 and "unknown config key 'optim.bogus'" in capsys.readouterr().err
    rc = main(["pretrain", "--config", str(SMALL), "--set", "optim.batch_size=big", "--output-dir", str(tmp_path)])
    assert rc == 2 and "optim.batch_size: expected an integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="data.manifest"):
        pretrain(load_config(PretrainConfig, SMALL, ["run.progress=false"]), tmp_path / "x")


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_on_cpu(collection, tmp_path):
    rows = read_manifest(collection / "manifest.jsonl")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(Path(rows[5]["path"]).read_bytes()[:1500])
    rows[5] = dict(rows[5], path=str(broken))
    write_jsonl(tmp_path / "m.jsonl", rows)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
           "-m", "avssl", "pretrain", "--config", str(SMALL), "--output-dir", str(tmp_path / "ddp"),
           "--set", f"data.manifest={tmp_path / 'm.jsonl'}", "--set", "data.num_workers=0",
           "--set", "optim.batch_size=2", "--set", "optim.epochs=1", "--set", "run.progress=false",
           "--set", "loss.num_negatives=8", "--set", "run.device=cpu"]  # gloo, also on a GPU machine
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["steps"] == 3  # 12 clips / (2 per process x 2 processes)
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and rows[-1]["clips"] == 12
    # With seed 0 the broken clip (index 5) falls to rank 1; rank 0 still lists it.
    skipped = [json.loads(x) for x in (tmp_path / "ddp" / "skipped.jsonl").read_text().splitlines()]
    assert skipped and all(s["path"] == str(broken) for s in skipped) and summary["skipped_files"] == len(skipped)


def test_cma_starts_from_an_avid_checkpoint(collection, tmp_path):
    m = collection / "manifest.jsonl"
    pretrain(_cfg(m, "optim.epochs=1"), tmp_path / "avid")
    avid = load_checkpoint(tmp_path / "avid" / "last.pt")
    pretrain(_cfg(m, "optim.epochs=1", "run.max_steps=1", "loss.kind=cma", "loss.cma_topk=3",
                  f"run.init_from={tmp_path / 'avid' / 'last.pt'}", "optim.lr=0.0"), tmp_path / "cma")
    cma = load_checkpoint(tmp_path / "cma" / "last.pt")
    # lr 0: the weights are the AVID ones (BatchNorm statistics move), positives come from AVID's memory.
    assert torch.equal(cma["model"]["video.stem.0.weight"], avid["model"]["video.stem.0.weight"])
    from avssl.losses.cma import agreement_topk

    expected = agreement_topk(avid["loss"]["memory.video"], avid["loss"]["memory.audio"], 3)
    assert torch.equal(cma["loss"]["positives"], expected)


def test_atomic_write_leaves_the_old_file_on_error(tmp_path):
    from avssl.train.checkpoint import keep_copy, save_atomic

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    path = tmp_path / "last.pt"
    save_atomic({"step": 1}, path)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_atomic({"step": 2, "bad": Unpicklable()}, path)  # dies half-way through writing
    assert torch.load(path, weights_only=True) == {"step": 1}
    keep_copy(path, tmp_path / "epoch_0001.pt")
    save_atomic({"step": 3}, path)
    assert torch.load(tmp_path / "epoch_0001.pt", weights_only=True) == {"step": 1}
    assert torch.load(path, weights_only=True) == {"step": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001.pt", "last.pt"]


def test_learning_rate_schedules():
    from avssl.train.pretrain import OptimConfig, lr_at

    cos = OptimConfig(lr=1.0, epochs=10, warmup_epochs=2, schedule="cosine")
    assert lr_at(cos, 0, 10) == pytest.approx(0.05)  # warm-up: (step + 1) / 20
    assert lr_at(cos, 19, 10) == pytest.approx(1.0)
    assert lr_at(cos, 60, 10) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_at(cos, 100, 10) == pytest.approx(0.0, abs=1e-12)
    step = OptimConfig(lr=1.0, epochs=10, schedule="step", lr_milestones=[3, 6], lr_gamma=0.1)
    assert [lr_at(step, s, 10) for s in (0, 29, 30, 60)] == pytest.approx([1.0, 1.0, 0.1, 0.01])
    assert lr_at(OptimConfig(lr=0.3, schedule="constant"), 1000, 10) == 0.3


@pytest.mark.slow
@pytest.mark.distributed
def test_a_folder_under_torchrun_is_probed_by_every_process_and_joined_by_rank_0(collection, tmp_path):
    """data.root: each process probes its share of the files (no process probes alone while the others wait on a
    collective's timeout); the joined manifest equals one process's."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "avssl", "pretrain", "--config", str(SMALL), "--output-dir", str(tmp_path / "ddp")]
    for o in (f"data.root={collection / 'media'}", "data.num_workers=0", "optim.batch_size=2", "optim.epochs=1",
              "run.progress=false", "loss.num_negatives=8", "run.device=cpu", "eval.every=0"):
        cmd += ["--set", o]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    parts = sorted(p for p in (tmp_path / "ddp" / "manifest_parts").glob("part*.jsonl") if "rejected" not in p.name)
    assert [len(read_manifest(p)) for p in parts] == [6, 6]
    strip = [{k: v for k, v in r.items() if k != "mtime"} for r in read_manifest(tmp_path / "ddp" / "manifest.jsonl")]
    assert strip == [{k: v for k, v in r.items() if k != "mtime"} for r in read_manifest(collection / "manifest.jsonl")]
