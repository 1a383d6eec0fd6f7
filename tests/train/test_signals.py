"""Ctrl-C and SIGTERM end a run with a last.pt at the step it reached, one line, status 130 or 143; the same command
resumes it, bit-exact (one process with a loader worker; two processes under torchrun)."""

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

from avssl.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"
STEPS = 60


def _command(collection: Path, out: Path, nproc: int = 1, port: int = 29561) -> list[str]:
    launch = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}"]
              if nproc > 1 else [sys.executable])
    cmd = launch + ["-m", "avssl", "pretrain", "--config", str(SMALL), "--output-dir", str(out)]
    for o in (f"data.manifest={collection / 'manifest.jsonl'}", "data.num_workers=1", "optim.batch_size=2",
              "optim.epochs=40", f"run.max_steps={STEPS}", "run.progress=false", "run.log_every=1",
              "loss.num_negatives=4", "run.device=cpu", "eval.every=0"):
        cmd += ["--set", o]
    return cmd


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def _run_until(cmd: list[str], out: Path, step: int, signum: int, timeout: float = 240) -> subprocess.CompletedProcess:
    """Start ``cmd`` in its own process group, wait until metrics.jsonl has reached ``step``, and send ``signum`` to
    the whole group (what a terminal's Ctrl-C, or a scheduler signalling a job, does)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and any(json.loads(x).get("step", 0) >= step for x in metrics.read_text().splitlines()
                                    if x.strip().endswith("}")):
            os.killpg(proc.pid, signum)
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _same_weights(a: Path, b: Path) -> None:
    x, y = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert x["step"] == y["step"] == STEPS
    for key in ("model", "loss"):
        for name, t in x[key].items():
            torch.testing.assert_close(y[key][name], t, rtol=0, atol=0, equal_nan=True, msg=f"{key}.{name}")


@pytest.fixture(scope="module")
def uninterrupted(collection, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("signals") / "full"
    res = subprocess.run(_command(collection, out), capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_saves_the_step_reached_and_the_same_command_resumes(collection, tmp_path, uninterrupted, signum,
                                                                    status):
    out = tmp_path / "run"
    cmd = _command(collection, out)
    res = _run_until(cmd, out, 5, signum)
    assert res.returncode == status, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    step = load_checkpoint(out / "last.pt")["step"]
    assert last == f"avssl: interrupted at step {step} ({signal.Signals(signum).name}); the same command resumes from here"
    assert 5 <= step < STEPS and "Traceback" not in res.stderr
    assert json.loads((out / "summary.json").read_text())["interrupted"] is True
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from {out / 'last.pt'} at step {step}" in again.stdout
    _same_weights(uninterrupted, out)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_under_torchrun_every_rank_stops_at_the_same_step_and_the_run_resumes(collection, tmp_path, signum):
    full, out = tmp_path / "full", tmp_path / "run"
    ok = subprocess.run(_command(collection, full, 2, 29563), capture_output=True, text=True, env=_env(), cwd=ROOT,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    res = _run_until(_command(collection, out, 2, 29565), out, 5, signum)
    # torchrun's own exit, as docs/usage.md tells a scheduler: its agent re-raises the signal as an exception
    assert res.returncode == 1 and "SignalException" in res.stderr.split("avssl: interrupted")[-1]
    lines = [x for x in res.stderr.splitlines() if x.startswith("avssl: interrupted at step")]
    step = load_checkpoint(out / "last.pt")["step"]
    assert lines == [f"avssl: interrupted at step {step} ({signal.Signals(signum).name}); the same command resumes "
                     "from here"], res.stderr[-3000:]
    assert "Traceback" not in res.stderr.split("avssl: interrupted")[0]
    again = subprocess.run(_command(collection, out, 2, 29567), capture_output=True, text=True, env=_env(), cwd=ROOT,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    _same_weights(full, out)
