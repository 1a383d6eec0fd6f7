"""Watching a run learn: evaluation during pretraining (retrieval, kNN, localization), best.pt, TensorBoard, and
runs that stop cleanly when the loss is not finite or the embeddings collapse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from avssl.cli import main
from avssl.config import load_config
from avssl.data.collection import read_manifest, write_jsonl
from avssl.train.checkpoint import load_checkpoint
from avssl.train.guard import mean_pairwise_cosine
from avssl.train.online import knn_accuracy, split_holdout
from avssl.train.pretrain import PretrainConfig, PretrainJob, pretrain

ROOT = Path(__file__).resolve().parents[2]
SMALL = ROOT / "configs" / "pretrain" / "avid_small_cpu.yaml"


def _over(collection: Path, *extra: str) -> list[str]:
    return [f"data.manifest={collection / 'manifest.jsonl'}", "data.num_workers=0", "optim.batch_size=3",
            "optim.epochs=2", "run.progress=false", "run.log_every=1", "loss.num_negatives=4", "run.device=cpu", *extra]


def _rows(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == kind]


def test_knn_by_hand_and_the_seeded_holdout():
    bank = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    r = knn_accuracy(bank, labels, torch.tensor([[1.0, 0.05], [0.05, 1.0]]), torch.tensor([0, 0]), k=2)
    assert r == {"top1": 0.5, "top5": 1.0}
    rows = [{"path": str(i)} for i in range(20)]
    train, held = split_holdout(rows, 0.25, seed=3)
    assert len(held) == 5 and not {r["path"] for r in train} & {r["path"] for r in held}
    assert split_holdout(rows, 0.25, seed=3) == (train, held) and split_holdout(rows, 0.25, seed=4) != (train, held)


def test_evaluation_rows_best_checkpoint_and_tensorboard(collection, tmp_path):
    labeled = [dict(r, label=i % 3) for i, r in enumerate(read_manifest(collection / "manifest.jsonl"))]
    write_jsonl(tmp_path / "bank.jsonl", labeled[:8])
    write_jsonl(tmp_path / "queries.jsonl", labeled[8:])
    out = tmp_path / "run"
    summary = pretrain(load_config(PretrainConfig, SMALL, _over(
        collection, "eval.every=1", "eval.holdout=0.25", "eval.labels_format=manifest",
        f"eval.labels_root={tmp_path / 'bank.jsonl'}", f"eval.labels_annotations={tmp_path / 'queries.jsonl'}",
        "run.keep_best=retrieval_v2a_R@1", "run.tensorboard=true")), out)
    rows = _rows(out, "eval")
    assert [r["epoch"] for r in rows] == [0, 1, 2]  # before training and after each epoch
    for r in rows:
        assert {"retrieval_v2a_R@1", "retrieval_a2v_R@5", "knn_top1", "knn_top5", "knn_audio_top1", "seconds"} <= set(r)
        assert r["retrieval_clips"] == 3 and 0 <= r["knn_top1"] <= 1
    assert len(read_manifest(out / "heldout.jsonl")) == 3 and len(read_manifest(out / "train.jsonl")) == 9
    assert load_checkpoint(out / "last.pt")["loss"]["memory.video"].shape[0] == 9  # held-out videos not trained on
    assert (out / "best.pt").exists() and summary["best"]["figure"] == "retrieval_v2a_R@1"
    train = _rows(out, "train")
    assert train and all("epochs" in r for r in train)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"]
    assert "pretrain/loss" in tags and "pretrain/retrieval_v2a_R@1" in tags and "pretrain/knn_top1" in tags


def test_a_resumed_run_with_evaluation_on_is_bit_exact(collection, tmp_path):
    ev = ["eval.every=1", "eval.holdout=0.25"]
    full = pretrain(load_config(PretrainConfig, SMALL, _over(collection, *ev, "run.max_steps=5")), tmp_path / "full")
    pretrain(load_config(PretrainConfig, SMALL, _over(collection, *ev, "run.max_steps=4")), tmp_path / "part")
    part = pretrain(load_config(PretrainConfig, SMALL, _over(collection, *ev, "run.max_steps=5")), tmp_path / "part")
    assert full["final_loss"] == part["final_loss"]
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("full", "part"))
    for name, t in a["model"].items():
        torch.testing.assert_close(t, b["model"][name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("keep_mb", [512, 0])
def test_evaluation_clips_are_decoded_once_when_they_fit(collection, tmp_path, monkeypatch, keep_mb):
    from avssl.data import datasets
    from avssl.models.avmodel import AVModel
    from avssl.train.online import OnlineEval

    cfg = load_config(PretrainConfig, SMALL, _over(collection, f"eval.keep_decoded_mb={keep_mb}", "eval.every=1"))
    rows = read_manifest(collection / "manifest.jsonl")
    evaluator = OnlineEval(cfg, tmp_path, rows[:6], torch.device("cpu"))
    decoded = []
    real = datasets.ClipMaker.decode
    monkeypatch.setattr(datasets.ClipMaker, "decode", lambda self, *a, **k: decoded.append(1) or real(self, *a, **k))
    model = AVModel(cfg.model, cfg.data.spectrogram)
    first = evaluator(model, 0)
    n = len(decoded)
    second = evaluator(model, 1)
    assert n == 6 and len(decoded) == (n if keep_mb else 2 * n)  # kept: the second evaluation decodes nothing
    assert first["retrieval_v2a_R@1"] == second["retrieval_v2a_R@1"]


def test_localization_evaluation_draws_maps(tmp_path):
    from avssl.data.collection import build_manifest
    from avssl.data.synthetic.compose import ComposeSpec, compose

    spec = ComposeSpec(width=96, height=64, fps=8, duration=1.5, distractors=1)
    compose(tmp_path / "train", 6, seed=1, spec=spec)
    compose(tmp_path / "held", 3, seed=2, spec=spec)
    build_manifest(tmp_path / "train", tmp_path / "m.jsonl", progress=False)
    cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / "localize_small_cpu.yaml", [
        f"data.manifest={tmp_path / 'm.jsonl'}", "optim.batch_size=3", "optim.epochs=1", "run.progress=false",
        "loss.num_negatives=4", "run.device=cpu", "eval.every=1", f"eval.localization={tmp_path / 'held/vggss.json'}",
        "eval.maps=2"])
    pretrain(cfg, tmp_path / "run")
    rows = _rows(tmp_path / "run", "eval")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert {"loc_ciou_at_0.5", "loc_auc", "loc_ciou_drop_mismatched", "loc_own_sound_more_mass"} <= set(rows[-1])
    assert (tmp_path / "run" / rows[-1]["maps"]).exists()


def test_localization_media_found_where_it_is_said_to_be_or_one_line(tmp_path):
    from avssl.config import ConfigError
    from avssl.data.synthetic.compose import ComposeSpec, compose
    from avssl.train.online import OnlineEval

    compose(tmp_path / "held", 3, seed=2, spec=ComposeSpec(width=64, height=48, fps=8, duration=1.0))
    boxes = tmp_path / "elsewhere" / "boxes.json"  # annotations kept apart from their media, as the demo keeps them
    boxes.parent.mkdir()
    boxes.write_text((tmp_path / "held" / "vggss.json").read_text())
    over = ["run.device=cpu", "eval.every=1", f"eval.localization={boxes}"]
    cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / "localize_small_cpu.yaml",
                      [*over, f"eval.localization_media={tmp_path / 'held'}"])
    assert len(OnlineEval(cfg, tmp_path / "run", None, torch.device("cpu")).localization.samples) == 3
    cfg = load_config(PretrainConfig, ROOT / "configs" / "pretrain" / "localize_small_cpu.yaml", over)
    with pytest.raises(ConfigError, match="none of the 3 annotated clips .*eval.localization_media"):
        OnlineEval(cfg, tmp_path / "run", None, torch.device("cpu"))  # it would score nothing (NaN) every epoch


def test_evaluation_without_anything_to_score_says_so_and_trains(collection, tmp_path, capsys):
    summary = pretrain(load_config(PretrainConfig, SMALL, _over(collection, "eval.every=1", "eval.holdout=0.05")),
                       tmp_path / "run")  # 12 videos: 1 held out, too few to rank
    assert summary["steps"] == 8 and "eval: nothing to evaluate on" in capsys.readouterr().out
    assert not _rows(tmp_path / "run", "eval")


def _nan_at(step_nan: int):
    real = PretrainJob.loss

    def loss(self, model, video, audio, batch, step):
        value, metrics = real(self, model, video, audio, batch, step)
        return (value * float("nan") if step + 1 == step_nan else value), metrics

    return loss


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(collection, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.setattr(PretrainJob, "loss", _nan_at(3))
    out = tmp_path / "run"
    argv = ["pretrain", "--config", str(SMALL), "--output-dir", str(out)]
    for o in _over(collection, "run.save_every_steps=1"):
        argv += ["--set", o]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 3 (epoch 0): non-finite loss" in err[0] and "last.pt keeps" in err[0]
    assert load_checkpoint(out / "last.pt")["step"] == 2
    assert _rows(out, "event")[0]["event"] == "non-finite loss"
    assert json.loads((out / "summary.json").read_text())["diverged"] is True


@pytest.mark.parametrize("action", ["skip_batch", "warn"])
def test_skip_batch_and_warn_go_on(collection, tmp_path, monkeypatch, action):
    monkeypatch.setattr(PretrainJob, "loss", _nan_at(3))
    summary = pretrain(load_config(PretrainConfig, SMALL, _over(collection, f"run.on_divergence={action}")),
                       tmp_path / "run")
    weights = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    finite = all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    assert summary["steps"] == 8 and finite == (action == "skip_batch")
    # a skipped batch made no update and the run recovered; warn let the NaN into the weights: every later step warns
    assert summary["divergence_events"] == (1 if action == "skip_batch" else 6)


def test_collapsing_embeddings_stop_the_run(collection, tmp_path, monkeypatch, capsys):
    real = PretrainJob.loss

    def collapsing(self, model, video, audio, batch, step):
        value, metrics = real(self, model, video, audio, batch, step)
        if step >= 2:  # from the third step every clip embeds to the same point
            index, v, a = self._last
            self._last = (index, torch.ones_like(v) + 0 * v, torch.ones_like(a) + 0 * a)
        return value, metrics

    monkeypatch.setattr(PretrainJob, "loss", collapsing)
    out = tmp_path / "run"
    argv = ["pretrain", "--config", str(SMALL), "--output-dir", str(out)]
    for o in _over(collection, "run.collapse_steps=3", "run.save_every_steps=1", "optim.epochs=3"):
        argv += ["--set", o]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "step 5 (epoch 1): embeddings collapsed" in err
    assert load_checkpoint(out / "last.pt")["step"] == 2  # nothing written while the collapse built up


def test_mean_pairwise_cosine():
    assert mean_pairwise_cosine(torch.ones(4, 3)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.eye(3)) == pytest.approx(0.0)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0], [-1.0, 0]])) == pytest.approx(-1.0)


@pytest.mark.slow
@pytest.mark.distributed
def test_evaluation_under_torchrun_runs_on_rank_0_while_the_other_waits(collection, tmp_path):
    import os
    import subprocess
    import sys

    rows = read_manifest(collection / "manifest.jsonl")
    write_jsonl(tmp_path / "train.jsonl", rows[:8])
    write_jsonl(tmp_path / "held.jsonl", rows[8:])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29551", "-m", "avssl",
           "pretrain", "--config", str(SMALL), "--output-dir", str(tmp_path / "run")]
    for o in [*_over(collection, "optim.batch_size=2", "eval.every=1", f"eval.manifest={tmp_path / 'held.jsonl'}"),
              f"data.manifest={tmp_path / 'train.jsonl'}"]:
        cmd += ["--set", o]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"),
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [r["epoch"] for r in _rows(tmp_path / "run", "eval")] == [0, 1, 2]


@pytest.fixture(scope="module")
def composed(tmp_path_factory) -> Path:
    from avssl.data.collection import build_manifest
    from avssl.data.synthetic.compose import ComposeSpec, compose

    d = tmp_path_factory.mktemp("composed")
    spec = ComposeSpec(width=96, height=64, fps=8, duration=1.5, distractors=1)
    compose(d / "train", 6, seed=1, spec=spec)
    compose(d / "held", 2, seed=2, spec=spec)
    build_manifest(d / "train", d / "m.jsonl", progress=False)
    return d


def _r2plus1d_with_localization(composed: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, SMALL, [
        f"data.manifest={composed / 'm.jsonl'}", "data.num_workers=0", "data.cache=false", "optim.batch_size=3",
        "optim.epochs=2", "run.progress=false", "run.log_every=1", "loss.num_negatives=4", "run.device=cpu",
        "eval.holdout=0", f"eval.localization={composed / 'held/vggss.json'}", "eval.maps=1", *extra])


def test_localization_evaluation_leaves_an_r2plus1d_model_as_it_found_it(composed, tmp_path):
    """Maps run the last stage at stride 1; the model the run trains must come back at its own stride, in its own
    modes, with no hook left behind."""
    from avssl.models.avmodel import AVModel
    from avssl.train.online import OnlineEval

    cfg = _r2plus1d_with_localization(composed, "eval.every=1")
    assert cfg.localize.last_stride == 1 and cfg.model.video_encoder == "r2plus1d"
    model = AVModel(cfg.model, cfg.data.spectrogram).train()
    model.audio_head.eval()  # a mixed state, as a partly frozen model has
    before = {n: m.training for n, m in model.named_modules()}
    row = OnlineEval(cfg, tmp_path, None, torch.device("cpu"))(model, 0)
    assert "loc_ciou_at_0.5" in row
    assert model.video.last_stride == 2 and model.video.spatial_stride == 16
    assert {n: m.training for n, m in model.named_modules()} == before
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_training_with_localization_evaluation_trains_the_same_network_as_without(composed, tmp_path):
    """Evaluation reads the model and its own random streams only: with it on, the run ends with the same weights
    as with it off, and a resumed run with it on ends where an uninterrupted one does."""
    off = pretrain(_r2plus1d_with_localization(composed, "eval.every=0"), tmp_path / "off")
    on = pretrain(_r2plus1d_with_localization(composed, "eval.every=1"), tmp_path / "on")
    assert [r["epoch"] for r in _rows(tmp_path / "on", "eval")] == [0, 1, 2]
    pretrain(_r2plus1d_with_localization(composed, "eval.every=1", "run.max_steps=3"), tmp_path / "part")
    part = pretrain(_r2plus1d_with_localization(composed, "eval.every=1"), tmp_path / "part")
    assert off["final_loss"] == on["final_loss"] == part["final_loss"]
    ref = load_checkpoint(tmp_path / "off" / "last.pt")["model"]
    for run in ("on", "part"):
        got = load_checkpoint(tmp_path / run / "last.pt")["model"]
        for name, t in ref.items():
            torch.testing.assert_close(got[name], t, rtol=0, atol=0, msg=f"{run}: {name}")
