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
from avssl.train.guard import effective_rank, std_of_l2_normalized
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
        assert {"retrieval_v2a_R@1", "retrieval_a2v_R@1", "knn_top1", "knn_top5", "knn_audio_top1", "seconds"} <= set(r)
        assert r["retrieval_clips"] == 3 and 0 <= r["knn_top1"] <= 1
        # 3 held-out clips: R@5 is 1 for any model, so it is left out and said why; chance beside R@1
        assert "retrieval_v2a_R@5" not in r and "R@5 left out" in r["retrieval_note"]
        assert r["retrieval_chance_R@1"] == pytest.approx(1 / 3)
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


def _cli(out: Path, *over: str) -> list[str]:
    argv = ["pretrain", "--config", str(SMALL), "--output-dir", str(out)]
    for o in over:
        argv += ["--set", o]
    return argv


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(collection, tmp_path, monkeypatch,
                                                                               capsys):
    monkeypatch.setattr(PretrainJob, "loss", _nan_at(3))
    out = tmp_path / "run"
    assert main(_cli(out, *_over(collection, "run.save_every_steps=1"))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 3 (epoch 0): non-finite loss" in err[0] and "last.pt keeps step 2" in err[0]
    assert load_checkpoint(out / "last.pt")["step"] == 2
    assert _rows(out, "event")[0]["event"] == "non-finite loss"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["diverged"] is True and summary["last_good_step"] == 2


def test_a_non_finite_loss_seen_at_a_log_step_names_its_first_step_and_says_when_nothing_was_saved(
        collection, tmp_path, monkeypatch, capsys):
    """The guard reads the device on log steps only: the NaN of step 2 is seen at step 4, named by its step; no
    last.pt existed, and the line says so (it used to promise one)."""
    monkeypatch.setattr(PretrainJob, "loss", _nan_at(2))
    out = tmp_path / "run"
    assert main(_cli(out, *_over(collection, "run.log_every=4", "optim.epochs=3"))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 2 (epoch 0): non-finite loss at 3 step(s) from step 2" in err[0]  # 2, 3, 4
    assert "stopped at step 4" in err[0] and "no checkpoint was written before it" in err[0]
    assert not (out / "last.pt").exists()
    assert json.loads((out / "summary.json").read_text())["last_good_step"] is None


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


def test_a_skipped_batch_changes_neither_weights_nor_statistics_nor_memory(collection, tmp_path, monkeypatch):
    """skip_batch is decided on the device (no read): the model's parameters and batch-norm statistics and the memory
    bank after the skipped step 3 are those after step 2."""
    two = pretrain(load_config(PretrainConfig, SMALL, _over(collection, "run.max_steps=2")), tmp_path / "two")
    monkeypatch.setattr(PretrainJob, "loss", _nan_at(3))
    three = pretrain(load_config(PretrainConfig, SMALL, _over(collection, "run.max_steps=3",
                                                                "run.on_divergence=skip_batch")), tmp_path / "three")
    assert two["steps"] == 2 and three["steps"] == 3 and three["divergence_events"] == 1
    a, b = (load_checkpoint(tmp_path / d / "last.pt") for d in ("two", "three"))
    for key in ("model", "loss"):
        for name, t in a[key].items():
            torch.testing.assert_close(b[key][name], t, rtol=0, atol=0, equal_nan=True, msg=f"{key}.{name}")


def _collapsing(from_step: int):
    real = PretrainJob.loss

    def loss(self, model, video, audio, batch, step):
        value, metrics = real(self, model, video, audio, batch, step)
        if step + 1 >= from_step:  # every clip embeds to the same point
            index, v, a = self._last
            self._last = (index, torch.ones_like(v) + 0 * v, torch.ones_like(a) + 0 * a)
        return value, metrics

    return loss


def test_collapse_stop_waits_for_warmup_and_a_window_and_keeps_the_state_before_it(collection, tmp_path, monkeypatch,
                                                                                  capsys):
    """Collapsed from step 3; judged from step 4 (warm-up and the first epoch: 4 steps), three log steps in a row
    below the threshold fill the window at step 6. Checkpoints are held from the first suspect figure (step 4), so
    last.pt keeps step 3, and the message, the event and summary.json say the same."""
    monkeypatch.setattr(PretrainJob, "loss", _collapsing(3))
    out = tmp_path / "run"
    assert main(_cli(out, *_over(collection, "run.on_collapse=stop", "run.collapse_window=3", "run.save_every_steps=1",
                                 "optim.epochs=3"))) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step 6 (epoch 1): audio embeddings collapsed" in err[0], err
    assert "last.pt keeps step 3" in err[0]
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert json.loads((out / "summary.json").read_text())["last_good_step"] == 3
    rows = _rows(out, "train")
    assert all(r["emb_std_video"] < 1e-3 for r in rows if r["step"] >= 3)
    assert all(r["emb_std_video"] > 0.1 for r in rows if r["step"] < 3)


def test_collapse_warns_by_default_and_never_holds_checkpoints(collection, tmp_path, monkeypatch, capsys):
    import avssl.train.engine as engine

    saved = []
    real = engine.save_atomic
    monkeypatch.setattr(engine, "save_atomic", lambda obj, path: saved.append(obj["step"]) or real(obj, path))
    monkeypatch.setattr(PretrainJob, "loss", _collapsing(1))
    summary = pretrain(load_config(PretrainConfig, SMALL, _over(
        collection, "run.collapse_window=2", "run.save_every_steps=1", "optim.epochs=3")), tmp_path / "run")
    assert summary["steps"] == 12 and summary["divergence_events"] >= 2  # one per modality and full window
    assert saved == list(range(1, 13))  # every step asked for, although the run was collapsing
    assert "embeddings collapsed" in capsys.readouterr().out
    events = _rows(tmp_path / "run", "event")
    assert {e["event"].split()[0] for e in events} == {"audio", "video"} and all(e["action"] == "warn" for e in events)


def test_the_spread_figure_is_centred_and_per_modality():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(512, 64, generator=g)
    assert std_of_l2_normalized(spread).item() == pytest.approx(1.0, abs=0.05)
    assert std_of_l2_normalized(torch.ones(8, 16)).item() == pytest.approx(0.0, abs=1e-6)
    # a common direction with differences around it: a mean cosine of about 0.99, and a rank that shows the differences
    shared = torch.randn(64, generator=g) * 10 + torch.randn(512, 64, generator=g)
    cos = torch.nn.functional.normalize(shared, dim=1)
    assert (cos @ cos.T).mean().item() > 0.98
    assert 0.05 < std_of_l2_normalized(shared).item() < 0.2
    assert effective_rank(shared).item() > 40 and effective_rank(torch.ones(8, 16)).item() < 2


def test_the_guard_judges_a_window_not_a_streak():
    from avssl.train.guard import DivergenceGuard

    events = []
    guard = DivergenceGuard("stop", "warn", threshold=0.5, window=4, arm_step=3, device=torch.device("cpu"),
                            record=events.append)
    spread, collapsed = torch.randn(32, 8), torch.ones(32, 8)
    for step, e in enumerate([collapsed, collapsed, spread, collapsed, spread, collapsed, spread, collapsed], 1):
        guard.watch(step, {"video": e}, None)  # before step 3 nothing is judged; then half below: no event
    assert events == []
    for step in range(9, 12):
        guard.watch(step, {"video": collapsed}, None)  # 3 of the last 4 below
    assert len(events) == 1 and events[0]["event"].startswith("video embeddings collapsed")


def test_removed_guard_keys_name_their_replacement_and_old_checkpoints_still_read(collection, tmp_path):
    from avssl.config import ConfigError, from_saved, to_dict

    with pytest.raises(ConfigError, match="run.collapse_cosine' was removed: replaced by run.collapse_std"):
        load_config(PretrainConfig, SMALL, ["run.collapse_cosine=0.9"])
    old = to_dict(load_config(PretrainConfig, SMALL))
    old["run"].update(collapse_cosine=0.99, collapse_steps=20)
    assert from_saved(PretrainConfig, old).run.on_collapse == "warn"


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


def test_recall_is_given_beside_chance_and_left_out_where_it_cannot_fail():
    from avssl.evaluation.retrieval import rank_metrics

    q = torch.eye(5)
    m = rank_metrics(q, q.flip(0), (1, 5, 10))  # only the middle clip's own pair is its best match
    assert m["R@1"] == pytest.approx(0.2) and m["chance_R@1"] == 0.2 and "R@5" not in m and "R@10" not in m
    assert m["left_out"].startswith("R@5, R@10 left out: with 5 clips")
    big = rank_metrics(torch.eye(12), torch.eye(12), (1, 5, 10))
    assert big["R@1"] == big["R@5"] == 1.0 and big["chance_R@5"] == 5 / 12 and "left_out" not in big
