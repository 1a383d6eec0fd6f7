"""Runs that move between cluster shapes: a checkpoint knows its run, a resume on another shape continues at the
same samples seen (or stops with one line), a changed config is named, and a killed rank is restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avssl.cli import main
from avssl.config import ConfigError, load_config
from avssl.train.checkpoint import load_checkpoint, save_atomic
from avssl.train.engine import lr_at
from avssl.train.pretrain import PretrainConfig, pretrain
from avssl.train.resume import RunShape, changed_values, config_hash, resume_position

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"


@pytest.fixture
def manifest(collection) -> Path:
    return collection / "manifest.jsonl"


def _over(manifest: Path, *extra: str) -> list[str]:
    return [f"data.manifest={manifest}", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=2",
            "run.progress=false", "run.log_every=1", "loss.num_negatives=8", "run.device=cpu", *extra]


def _rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_position_keeps_the_samples_seen():
    ck = {"step": 4, "world_size": 2, "batch_size": 2, "steps_per_epoch": 3}  # 1 step into epoch 1 of 12 videos
    assert resume_position(ck, RunShape(2, 2, 3)) == (4, "")
    step, note = resume_position(ck, RunShape(1, 4, 3))  # the same global batch on one process
    assert step == 4 and "4 samples into epoch 1 is step 4" in note
    assert resume_position(ck, RunShape(1, 2, 6))[0] == 8  # half the global batch: twice the steps
    step, note = resume_position(ck, RunShape(1, 3, 4))  # 4 samples = 1 step of 3, 1 sample seen again
    assert step == 5 and "1 samples of the epoch are seen again" in note
    assert resume_position({"step": 7}, RunShape(1, 4, 3)) == (7, "")  # an older checkpoint: as it says


def test_config_hash_and_changes_ignore_how_a_run_is_carried_out():
    a = {"optim": {"lr": 0.1, "batch_size": 4}, "run": {"log_every": 5, "device": "cpu"}, "data": {"num_workers": 2}}
    b = {"optim": {"lr": 0.1, "batch_size": 4}, "run": {"log_every": 1, "device": "cuda"}, "data": {"num_workers": 8}}
    assert config_hash(a) == config_hash(b) and changed_values(a, b) == []
    c = {**b, "optim": {"lr": 0.2, "batch_size": 4}}
    assert changed_values(a, c) == [("optim.lr", 0.1, 0.2)] and config_hash(a) != config_hash(c)


def test_a_checkpoint_knows_the_run_that_wrote_it(manifest, tmp_path):
    pretrain(load_config(PretrainConfig, SMALL, _over(manifest, "run.max_steps=2")), tmp_path / "run")
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert (ck["world_size"], ck["batch_size"], ck["steps_per_epoch"], ck["samples_seen"]) == (1, 4, 3, 8)
    assert ck["config_hash"] == config_hash(ck["config"]) and len(ck["rng"]) == 1
    assert set(ck["rng"][0]) == {"cpu"}  # plus "cuda" on a GPU


def test_a_changed_config_stops_with_one_line_unless_allowed(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(load_config(PretrainConfig, SMALL, _over(manifest, "run.max_steps=2")), out)
    before = (out / "config.yaml").read_text()
    args = ["pretrain", "--config", str(SMALL), "--output-dir", str(out)]
    sets = [x for o in _over(manifest, "run.max_steps=3", "optim.lr=0.01", "loss.temperature=0.1")
            for x in ("--set", o)]
    assert main(args + sets) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "loss.temperature 0.07 -> 0.1, optim.lr 0.002 -> 0.01" in err
    assert "run.allow_config_change=true" in err and (out / "config.yaml").read_text() == before
    assert load_checkpoint(out / "last.pt")["step"] == 2
    assert main(args + sets + ["--set", "run.allow_config_change=true"]) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert (out / "config.before_step_000002.yaml").read_text() == before
    assert "lr: 0.01" in (out / "config.yaml").read_text()
    # an operational change (log interval, workers, max_steps) resumes without a word
    assert main(args + sets[:-4] + ["--set", "run.log_every=2", "--set", "run.max_steps=4", "--set",
                                    "optim.lr=0.01", "--set", "loss.temperature=0.1"]) == 0


def test_a_run_resumed_with_another_global_batch_continues_at_the_same_samples(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(load_config(PretrainConfig, SMALL, _over(manifest, "run.max_steps=4")), out)  # 1 step into epoch 1
    capsys.readouterr()
    cfg = load_config(PretrainConfig, SMALL, _over(manifest, "optim.batch_size=2", "run.allow_config_change=true"))
    summary = pretrain(cfg, out)
    printed = capsys.readouterr().out
    assert "4 samples into epoch 1 is step 8" in printed
    assert summary["steps"] == 12  # 2 epochs of 12 // 2
    rows = _rows(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, *range(9, 13)]
    assert rows[4]["lr"] == pytest.approx(lr_at(cfg.optim, 8, 6)) == pytest.approx(lr_at(
        load_config(PretrainConfig, SMALL, _over(manifest)).optim, 4, 3))  # where the first run's schedule was


def test_a_checkpoint_of_another_world_size_is_placed_by_samples(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(load_config(PretrainConfig, SMALL, _over(manifest, "run.max_steps=4", "optim.batch_size=2",
                                                      "optim.epochs=1")), out)  # spe 6
    ck = load_checkpoint(out / "last.pt")
    ck.update(world_size=2, batch_size=2, steps_per_epoch=3, step=2)  # as if 2 processes x 2 had run 2 steps
    save_atomic(ck, out / "last.pt")
    capsys.readouterr()
    summary = pretrain(load_config(PretrainConfig, SMALL, _over(manifest, "optim.batch_size=2", "optim.epochs=1")),
                       out)
    assert "the checkpoint's run had 2 process(es) x 2" in capsys.readouterr().out
    assert summary["steps"] == 6 and _rows(out)[-2]["step"] == 5  # 8 samples = step 4 of 6 on 1 process x 2


def test_a_checkpoint_of_another_collection_stops_with_one_line(manifest, tmp_path):
    out = tmp_path / "run"
    pretrain(load_config(PretrainConfig, SMALL, _over(manifest, "run.max_steps=1")), out)
    ck = load_checkpoint(out / "last.pt")
    ck["loss"]["memory.video"] = ck["loss"]["memory.video"][:10]
    save_atomic(ck, out / "last.pt")
    with pytest.raises(ConfigError, match="memory bank has 10 slots, this collection 12 videos"):
        pretrain(load_config(PretrainConfig, SMALL, _over(manifest, "run.max_steps=2")), out)


def _torchrun(manifest: Path, out: Path, nproc: int, *extra: str, restarts: int = 0, port: int = 29541,
              rdzv: str = "static") -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    where = [f"--master_port={port}"] if rdzv == "static" else ["--rdzv-backend=c10d",
                                                                f"--rdzv-endpoint=localhost:{port}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *where,
           f"--max-restarts={restarts}", "-m", "avssl", "pretrain", "--config", str(SMALL), "--output-dir", str(out)]
    for o in _over(manifest, "optim.batch_size=2", *extra):
        cmd += ["--set", o]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_then_one_continue_at_the_same_samples(manifest, tmp_path):
    out = tmp_path / "run"
    p = _torchrun(manifest, out, 2, "run.max_steps=4")  # 3 steps of 2 x 2 per epoch: 1 step into epoch 1
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    assert len([x for x in stdout.splitlines() if x.startswith("{")]) == 1  # one summary, from rank 0
    ck = load_checkpoint(out / "last.pt")
    assert (ck["world_size"], ck["step"], len(ck["rng"])) == (2, 4, 2)
    p = _torchrun(manifest, out, 1)
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    assert "4 samples into epoch 1 is step 8" in stdout and "not bit-exact" in stdout
    assert json.loads((out / "summary.json").read_text())["steps"] == 12  # 2 epochs of 12 // 2 on 1 process
    assert [r["epoch"] for r in _rows(out)][4] == 1


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("rdzv, port", [("static", 29543), ("c10d", 29545)])
def test_a_killed_rank_is_restarted_by_torchrun_and_resumes(manifest, tmp_path, rdzv, port):
    """Before each attempt got its own key space in torchrun's store (distributed.init_from_env), about half of
    these restarts hung in gloo's connection set-up, reading the dead workers' addresses."""
    out = tmp_path / "run"
    p = _torchrun(manifest, out, 2, "optim.epochs=20", "run.save_every_steps=1", restarts=2, port=port, rdzv=rdzv)
    deadline = time.time() + 240
    while not (out / "last.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)
    assert p.poll() is None, "the run ended before it could be killed"
    children = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2, children
    os.kill(int(children[1]), signal.SIGKILL)  # one rank dies
    stdout, stderr = p.communicate(timeout=240)
    assert p.returncode == 0, stderr[-3000:]
    assert "resuming from" in stdout
    assert json.loads((out / "summary.json").read_text())["steps"] == 60  # 20 epochs x 3 steps
    assert load_checkpoint(out / "last.pt")["step"] == 60
    assert not list(out.glob(".*.tmp"))
    steps = [r["step"] for r in _rows(out)]
    assert steps[-1] == 60 and set(range(1, 61)) <= set(steps)  # some steps logged twice: after the restart


def test_cuda_rng_is_saved_per_rank_when_there_is_a_gpu(manifest, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (tests/train/test_cuda.py checks a bit-exact CUDA resume)")
    pretrain(load_config(PretrainConfig, SMALL, [*_over(manifest, "run.max_steps=1"), "run.device=cuda"]),
             tmp_path / "run")
    assert "cuda" in load_checkpoint(tmp_path / "run" / "last.pt")["rng"][0]
