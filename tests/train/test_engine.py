"""The training loop's step reads nothing from the device between log steps, and run.compile.

On CUDA, ``torch.cuda.set_sync_debug_mode("error")`` holds it (tests/train/test_cuda.py). On the CPU the same step
(:meth:`Trainer._prepare` then :meth:`Trainer.step`, what ``fit`` runs for each batch between log steps) runs on
PyTorch's meta device, where tensors have shapes but no values: ``.item()``, ``float()``, ``bool()``, ``.tolist()``
of any of them raise. So a read added to the step, the loss, the memory update, the guard or the batch
preprocessing fails this test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avssl.config import load_config
from avssl.train.configs import PretrainConfig
from avssl.train.engine import StepStats, Trainer, UpdateUndo
from avssl.train.guard import DivergenceGuard
from avssl.train.pretrain import PretrainJob, pretrain

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs" / "pretrain"


def _meta_batch(cfg: PretrainConfig, b: int) -> dict:
    """A loader's batch as the deferred preprocessing receives it (uint8 frames, waveforms, drawn parameters), with
    colour jitter on for every clip and one time mask each."""
    c = cfg.data.clip
    t = max(1, round(c.video_duration * c.fps))
    params = torch.tensor([[1.0, 1.1, 0.9, 1.2, 0.05, 0.0, 1.0, 2.0, 3.0]]).repeat(b, 1)
    return {"video": torch.zeros(b, 3, t, c.crop, c.crop, dtype=torch.uint8), "video_params": params,
            "waveform": torch.zeros(b, round(c.audio_duration * c.sample_rate)),
            "audio_params": torch.tensor([[[0, 3, 5]]]).repeat(b, 1, 1), "index": torch.arange(b),
            "failures": []}


@pytest.mark.parametrize("config, extra", [
    ("avid_small_cpu.yaml", []),
    ("avid_small_cpu.yaml", ["loss.kind=batch"]),
    ("localize_small_cpu.yaml", []),
    ("avid_r2plus1d18_kinetics.yaml", []),
    ("avid_cma_r2plus1d18_kinetics.yaml", []),
    ("avid_r2plus1d18tv_8x112_200e_kinetics.yaml", []),
])
@pytest.mark.parametrize("on_divergence", ["stop", "skip_batch"])
def test_a_steady_state_step_reads_nothing_from_the_device(tmp_path, config, extra, on_divergence):
    cfg = load_config(PretrainConfig, CONFIGS / config, ["run.device=meta", "data.preprocess=device",
                                                         f"run.on_divergence={on_divergence}", "optim.batch_size=2",
                                                         *extra])
    trainer = Trainer(cfg, tmp_path, "pretrain")
    trainer._use(torch.utils.data.TensorDataset(torch.zeros(8)), cfg.data, 8)  # the batch preprocessing on the device
    job = PretrainJob(cfg, trainer.rt, 64, trainer.steps_per_epoch)
    # read once, at a run's first step or when a checkpoint is loaded; then kept on the host
    job.loss_fn._z_known = [True] * 4
    job.loss_fn._has_positives = True
    trainer.setup_job(job)
    trainer.wrap(job)
    guard = DivergenceGuard(on_divergence, "warn", 0.05, 10, 1, trainer.device, print)
    undo = UpdateUndo(job.model) if guard.skips else None
    stats = StepStats()
    for step in range(3):
        batch = _meta_batch(cfg, 2)
        trainer.step(job, batch, trainer._prepare(batch), step, guard, undo, stats)
    assert stats.steps == 3 and stats.last_loss.device.type == "meta"
    with pytest.raises(RuntimeError, match="meta"):  # the check checks: a read raises
        stats.read()


def _small(manifest: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, CONFIGS / "avid_small_cpu.yaml", [
        f"data.manifest={manifest}", "data.num_workers=0", "optim.batch_size=4", "optim.epochs=2", "run.progress=false",
        "run.log_every=1", "loss.num_negatives=8", "run.device=cpu", "data.cache=false", *extra])


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"]


def test_log_rows_hold_interval_means_and_rates_and_the_phases(collection, tmp_path):
    """With run.log_every=3 a row holds the mean loss of its 3 steps (the per-step figures are kept on the device
    and read once), the rate over its interval, and with run.time_phases where the time went."""
    m = collection / "manifest.jsonl"
    pretrain(_small(m), tmp_path / "every")
    pretrain(_small(m, "run.log_every=3", "run.time_phases=true"), tmp_path / "third")
    every, third = _losses(tmp_path / "every"), _losses(tmp_path / "third")
    assert len(every) == 6 and len(third) == 2
    assert third == pytest.approx([sum(every[:3]) / 3, sum(every[3:]) / 3], rel=1e-6)
    rows = [json.loads(x) for x in (tmp_path / "third" / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert {"time_data_ms", "time_prepare_ms", "time_compute_ms", "time_step_ms"} <= set(r)
        assert r["time_compute_ms"] > 0 and r["clips_per_s"] > 0


@pytest.mark.slow
def test_compiled_and_eager_steps_give_the_same_losses_and_checkpoints_keep_plain_keys(collection, tmp_path):
    """run.compile (Inductor on the CPU; its C++ build needs a compiler): the first 3 losses agree with eager ones
    within 1e-5 (relative; fused kernels reassociate float sums, and from step 4 the small differences grow through
    the updates: within 2e-2 at step 6); the graphs compiled for one epoch serve three (no recompilation per epoch);
    last.pt has the plain module's keys; and the run resumes with compile switched off."""
    import torch._dynamo

    m = collection / "manifest.jsonl"
    pretrain(_small(m, "optim.epochs=4", "run.max_steps=6"), tmp_path / "eager")

    def graphs(out: str, *extra: str) -> int:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        pretrain(_small(m, "run.compile=true", *extra), tmp_path / out)
        return torch._dynamo.utils.counters["stats"]["unique_graphs"]

    one = graphs("one_epoch", "optim.epochs=4", "run.max_steps=3")
    three = graphs("compiled", "optim.epochs=4", "run.max_steps=9")
    assert 1 <= one == three
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert compiled[:3] == pytest.approx(eager[:3], rel=1e-5)
    assert compiled[:6] == pytest.approx(eager, rel=2e-2)
    keys = torch.load(tmp_path / "compiled" / "last.pt", weights_only=True)["model"].keys()
    assert not any("_orig_mod" in k for k in keys)
    pretrain(_small(m, "optim.epochs=4", "run.max_steps=12"), tmp_path / "compiled")  # resumes at step 9, eagerly
    assert len(_losses(tmp_path / "compiled")) == 12


def test_a_failed_compilation_says_so_in_one_line_and_the_run_goes_on_eagerly(collection, tmp_path, monkeypatch,
                                                                              capsys):
    import avssl.train.engine as engine

    def failing(model, setting):
        def broken_backend(gm, example_inputs):
            raise RuntimeError("no C++ compiler here")

        return torch.compile(model, backend=broken_backend)

    monkeypatch.setattr(engine, "compile_model", failing)
    m = collection / "manifest.jsonl"
    eager = pretrain(_small(m), tmp_path / "eager")
    compiled = pretrain(_small(m, "run.compile=true"), tmp_path / "compiled")
    out = capsys.readouterr().out
    assert out.count("run.compile: compilation failed") == 1 and "going on eagerly" in out
    assert compiled["final_loss"] == eager["final_loss"]


def test_a_finished_run_started_again_does_nothing_and_keeps_its_summary(collection, tmp_path, capsys):
    """The user's re-run of a finished pretraining: it overwrote summary.json with "final_loss": NaN (not JSON)."""
    from avssl.cli import main

    out = tmp_path / "run"
    argv = ["pretrain", "--config", str(CONFIGS / "avid_small_cpu.yaml"), "--output-dir", str(out)]
    for o in (f"data.manifest={collection / 'manifest.jsonl'}", "data.num_workers=0", "optim.batch_size=4",
              "optim.epochs=1", "run.progress=false", "loss.num_negatives=8", "run.device=cpu", "eval.every=0"):
        argv += ["--set", o]
    assert main(argv) == 0
    before = (out / "summary.json").read_text()
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "already finished at step 3 (nothing to do" in captured.out
    assert (out / "summary.json").read_text() == before
    assert json.loads(captured.out.strip().splitlines()[-1])["final_loss"] == json.loads(before)["final_loss"]


def test_no_json_file_avssl_writes_holds_nan(tmp_path):
    from avssl.fileio import to_json, write_json

    write_json(tmp_path / "x.json", {"loss": float("nan"), "rows": [float("inf"), 1.5, (float("-inf"),)]})
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == {
        "loss": None, "rows": [None, 1.5, [None]]}
    assert to_json({"a": float("nan")}) == '{"a": null}'
    stats = StepStats()
    row = {"kind": "train", "loss": stats.final_loss()}  # no step taken: NaN
    assert to_json(row) == '{"kind": "train", "loss": null}'
