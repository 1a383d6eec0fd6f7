from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avssl.config import ConfigError
from avssl.losses.avid import AVIDLoss, LossConfig, best_location, contrast, infonce_loss, nce_loss
from avssl.losses.cma import CMALoss, agreement_topk, positive_set_loss
from avssl.losses.memory import MemoryBank, sample_negatives


def _unit(*shape):
    return F.normalize(torch.randn(*shape), dim=-1)


def test_negatives_never_include_the_instance_and_cover_the_rest():
    index = torch.tensor([0, 3, 9])
    neg = sample_negatives(index, 10, 2000, torch.Generator().manual_seed(0))
    assert neg.shape == (3, 2000) and neg.min() >= 0 and neg.max() <= 9
    for row, i in zip(neg, index):
        assert (row != i).all()
        assert set(row.tolist()) == set(range(10)) - {int(i)}


def test_memory_update_is_momentum_then_renormalize():
    bank = MemoryBank(5, 4, momentum=0.5, seed=0)
    old_v, old_a = bank.video.clone(), bank.audio.clone()
    idx = torch.tensor([1, 3])
    v, a = _unit(2, 4), _unit(2, 4)
    bank.update(idx, v, a)
    assert torch.allclose(bank.video[idx], F.normalize(0.5 * old_v[idx] + 0.5 * v, dim=1))
    assert torch.allclose(bank.audio[idx], F.normalize(0.5 * old_a[idx] + 0.5 * a, dim=1))
    untouched = torch.tensor([0, 2, 4])
    assert torch.equal(bank.video[untouched], old_v[untouched])
    assert set(bank.state_dict()) == {"video", "audio"}


def _ref_infonce(q, bank, index, neg, t):
    total = 0.0
    for b in range(len(q)):
        pos = math.exp(float(q[b] @ bank[index[b]]) / t)
        negs = sum(math.exp(float(q[b] @ bank[j]) / t) for j in neg[b])
        total += -math.log(pos / (pos + negs))
    return total / len(q)


def _ref_nce(q, bank, index, neg, t, log_z, n):
    k = neg.shape[1]
    total = 0.0
    for b in range(len(q)):
        p = math.exp(float(q[b] @ bank[index[b]]) / t - log_z)
        total -= math.log(p / (p + k / n))
        for j in neg[b]:
            pn = math.exp(float(q[b] @ bank[j]) / t - log_z)
            total -= math.log(1 - pn / (pn + k / n))
    return total / len(q)


@pytest.mark.parametrize("b, n, k, d", [(4, 10, 5, 8), (8, 50, 16, 16), (3, 7, 6, 4)])
def test_infonce_and_nce_match_plain_references(b, n, k, d):
    torch.manual_seed(b * n)
    q, bank = _unit(b, d).double(), _unit(n, d).double()
    index = torch.randperm(n)[:b]
    neg = sample_negatives(index, n, k)
    t = 0.07
    pos = (q * bank[index]).sum(1) / t
    negl = torch.einsum("bd,bkd->bk", q, bank[neg]) / t
    assert float(infonce_loss(pos, negl)) == pytest.approx(_ref_infonce(q, bank, index, neg, t), rel=1e-6)
    log_z = torch.tensor(3.0, dtype=torch.double)
    assert float(nce_loss(pos, negl, log_z, n)) == pytest.approx(_ref_nce(q, bank, index, neg, t, 3.0, n), rel=1e-6)


@pytest.mark.parametrize("form", ["nce", "infonce"])
def test_avid_loss_terms_follow_the_coefficients(form):
    torch.manual_seed(0)
    n, d = 40, 8
    for xm, wm, names in ((1, 0, {"v2a", "a2v"}), (0, 1, {"v2v", "a2a"}), (1, 1, {"v2a", "a2v", "v2v", "a2a"})):
        loss_fn = AVIDLoss(n, d, LossConfig(form=form, num_negatives=16, xmodal=xm, wmodal=wm))
        loss, terms = loss_fn(_unit(4, d), _unit(4, d), torch.arange(4), torch.Generator().manual_seed(1))
        assert set(terms) == names and math.isfinite(float(loss))
    # Cross-modal video term equals the reference against the audio memory.
    loss_fn = AVIDLoss(n, d, LossConfig(form="infonce", num_negatives=16))
    v, a, idx = _unit(4, d), _unit(4, d), torch.tensor([5, 6, 7, 8])
    _, terms = loss_fn(v, a, idx, torch.Generator().manual_seed(2))
    neg = sample_negatives(idx, n, 16, torch.Generator().manual_seed(2))
    assert terms["v2a"] == pytest.approx(_ref_infonce(v, loss_fn.memory.audio, idx, neg, 0.07), rel=1e-4)


@pytest.mark.parametrize("form", ["nce", "infonce"])
@pytest.mark.parametrize("kind", ["avid", "cma"])
def test_a_few_optimizer_steps_lower_the_loss(form, kind):
    torch.manual_seed(0)
    n, d = 32, 16
    v_param = torch.nn.Parameter(torch.randn(n, d))
    a_param = torch.nn.Parameter(torch.randn(n, d))
    cfg = LossConfig(kind=kind, form=form, num_negatives=16, cma_topk=4)
    loss_fn = (CMALoss if kind == "cma" else AVIDLoss)(n, d, cfg)
    opt = torch.optim.Adam([v_param, a_param], lr=0.05)
    idx = torch.arange(n)
    losses = []
    for step in range(60):
        v, a = F.normalize(v_param, dim=1), F.normalize(a_param, dim=1)
        loss, _ = loss_fn(v, a, idx, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_fn.memory.update(idx, v.detach(), a.detach())
        if kind == "cma" and step == 10:
            loss_fn.update_positives()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[10:15]) / 5


def test_agreement_needs_both_modalities_and_is_chunked():
    # 0-1 agree in video and audio; 0-2 agree in video only; 0-3 in audio only.
    video = F.normalize(torch.tensor([[1.0, 0, 0], [1, 0.1, 0], [1, 0, 0.05], [0, 1, 0], [0, 0, 1]]), dim=1)
    audio = F.normalize(torch.tensor([[1.0, 0, 0], [1, 0, 0.1], [0, 1, 0], [1, 0.05, 0], [0, 0, 1]]), dim=1)
    top = agreement_topk(video, audio, 1)
    assert top[0, 0] == 1 and top[1, 0] == 0
    assert torch.equal(agreement_topk(video, audio, 3, chunk=2), agreement_topk(video, audio, 3, chunk=100))
    assert (agreement_topk(video, audio, 4) != torch.arange(5)[:, None]).all()  # never itself


def test_positive_set_loss_matches_reference():
    torch.manual_seed(0)
    n, d, b, k = 20, 8, 3, 5
    emb, bank = _unit(b, d), _unit(n, d)
    index = torch.tensor([2, 7, 11])
    positives = agreement_topk(bank, bank, 3)
    neg = sample_negatives(index, n, k)
    got = float(positive_set_loss(emb, bank, index, positives, neg, 0.1))
    ref = 0.0
    for i in range(b):
        pos = [index[i].item()] + positives[index[i]].tolist()
        sp = sum(math.exp(float(emb[i] @ bank[j]) / 0.1) for j in pos)
        sn = sum(math.exp(float(emb[i] @ bank[j]) / 0.1) for j in neg[i])
        ref += -math.log(sp / (sp + sn))
    assert got == pytest.approx(ref / b, rel=1e-5)


def test_cma_uses_positive_sets_once_computed():
    loss_fn = CMALoss(16, 8, LossConfig(kind="cma", num_negatives=8, cma_topk=3))
    args = (_unit(4, 8), _unit(4, 8), torch.arange(4), torch.Generator().manual_seed(0))
    _, terms = loss_fn(*args)
    assert "v2v_cma" not in terms and not loss_fn.has_positives
    loss_fn.update_positives()
    _, terms = loss_fn(*args)
    assert {"v2a", "a2v", "v2v_cma", "a2a_cma"} <= set(terms)
    assert "positives" in loss_fn.state_dict()


def test_negatives_outside_a_set_never_hit_it_and_cover_the_rest():
    from avssl.losses.memory import sample_negatives_outside

    exclude = torch.tensor([[7, 2, 3], [0, 19, 10]])
    draw = sample_negatives_outside(exclude, 20, 4000, torch.Generator().manual_seed(0))
    for row, ex in zip(draw, exclude):
        seen = set(row.tolist())
        assert not seen & set(ex.tolist()) and seen == set(range(20)) - set(ex.tolist())


def test_released_cma_form_matches_a_plain_reference():
    from avssl.losses.avid import LossConfig
    from avssl.losses.cma import CMALoss

    torch.manual_seed(0)
    n, d, k, t = 40, 8, 3, 0.07
    cfg = LossConfig(kind="cma", form="nce", num_negatives=10, cma_topk=k, cma_form="nce", cma_negatives=4,
                     xmodal=0.25, cma_wmodal=0.25)
    loss_fn = CMALoss(n, d, cfg, seed=1)
    loss_fn.update_positives()
    v, a = F.normalize(torch.randn(5, d), dim=1), F.normalize(torch.randn(5, d), dim=1)
    index = torch.tensor([0, 5, 9, 17, 33])
    loss, terms = loss_fn(v, a, index, torch.Generator().manual_seed(3))
    # the reference, one sample at a time: the same negatives, drawn outside {instance} U positives
    from avssl.losses.memory import sample_negatives_outside

    pos = loss_fn.positives[index]
    neg = sample_negatives_outside(torch.cat([index[:, None], pos], 1), n, 10, torch.Generator().manual_seed(3))
    mem = loss_fn.memory

    def nce(p_logits, n_logits, log_z):
        noise = math.log(len(n_logits) / n)
        h = lambda s: 1 / (1 + math.exp(noise - (s - log_z)))  # noqa: E731
        return -(sum(math.log(h(s)) for s in p_logits) / len(p_logits) + sum(math.log(1 - h(s)) for s in n_logits))

    z = loss_fn.log_z.tolist()
    total = 0.0
    def logits(e, bank, ids):
        return [float(e @ bank[j]) / t for j in ids]

    for b in range(5):
        i = index[b]
        terms_b = [  # cross-modal instance terms (1024 -> 10 negatives), within-modal positive sets (4 negatives)
            (logits(v[b], mem.audio, [i]), logits(v[b], mem.audio, neg[b]), z[0]),
            (logits(a[b], mem.video, [i]), logits(a[b], mem.video, neg[b]), z[1]),
            (logits(v[b], mem.video, pos[b]), logits(v[b], mem.video, neg[b, :4]), z[2]),
            (logits(a[b], mem.audio, pos[b]), logits(a[b], mem.audio, neg[b, :4]), z[3]),
        ]
        total += sum(0.25 * nce(p, q, lz) for p, q, lz in terms_b) / 5
    assert set(terms) == {"v2a", "a2v", "v2v_cma", "a2a_cma"}
    assert float(loss) == pytest.approx(total, rel=1e-4)


def test_max_over_locations_scores_each_slot_by_its_best_location():
    torch.manual_seed(0)
    b, nloc, n, d, k = 3, 5, 12, 8, 4
    locs, bank = _unit(b, nloc, d), _unit(n, d)
    index = torch.tensor([0, 1, 2])
    neg = sample_negatives(index, n, k)
    pos, negl = contrast(locs, bank, index, neg, 0.1)
    for i in range(b):
        assert float(pos[i]) == pytest.approx(max(float(locs[i, j] @ bank[index[i]]) for j in range(nloc)) / 0.1)
        for q in range(k):
            ref = max(float(locs[i, j] @ bank[neg[i, q]]) for j in range(nloc)) / 0.1
            assert float(negl[i, q]) == pytest.approx(ref, rel=1e-5)
    sets, _ = contrast(locs, bank, torch.tensor([[0, 3], [1, 4], [2, 5]]), neg, 0.1)  # positive sets
    assert sets.shape == (3, 2) and float(sets[0, 1]) == pytest.approx(float((locs[0] @ bank[3]).max()) / 0.1)


def test_best_location_is_the_one_matching_the_clips_own_audio():
    audio = torch.eye(3)
    video = torch.zeros(3, 3, 2, 2)  # (B, D, H, W)
    video[0, 0, 1, 1] = 1  # clip 0: its audio's direction at (1, 1)
    video[1, 1, 0, 1] = 1
    video[2, 2, 1, 0] = 1
    video[:, :, 0, 0] += 0.5  # a distractor direction everywhere else
    best = best_location(video, audio)
    torch.testing.assert_close(best, torch.eye(3))
    pooled = torch.randn(3, 3)
    assert best_location(pooled, audio) is pooled


@pytest.mark.parametrize("kind", ["avid", "cma"])
def test_mil_loss_trains_only_the_locations_that_answer_the_audio(kind):
    torch.manual_seed(0)
    n, d = 16, 8
    loss_fn = (CMALoss if kind == "cma" else AVIDLoss)(n, d, LossConfig(kind=kind, av_pool="max", num_negatives=8,
                                                                        cma_topk=2))
    if kind == "cma":
        loss_fn.update_positives()
    dense = F.normalize(torch.randn(4, d, 3, 3), dim=1).requires_grad_()
    audio = F.normalize(torch.randn(4, d), dim=1)
    loss, terms = loss_fn(dense, audio, torch.arange(4), torch.Generator().manual_seed(0))
    assert math.isfinite(float(loss.detach())) and "v2a" in terms
    loss.backward()
    touched = (dense.grad.abs().sum(1) > 0).flatten(1).sum(1)
    assert (touched >= 1).all() and (touched < 9).all()  # max-pooling: not every location gets a gradient


def test_shared_partition_is_the_released_one_and_serves_every_term():
    # Released (criterions/nce.py): one Z, the mean exp(negative score) of the first term's first batch, used by
    # every term afterwards: P(data) = exp(s) / (exp(s) + K Z).
    torch.manual_seed(0)
    n, d, k = 30, 8, 6
    cfg = LossConfig(form="nce", num_negatives=k, xmodal=1, wmodal=1, nce_partition="shared")
    loss_fn = AVIDLoss(n, d, cfg)
    v, a, index = _unit(4, d), _unit(4, d), torch.tensor([0, 5, 9, 17])
    g = torch.Generator().manual_seed(1)
    _, terms = loss_fn(v, a, index, g)
    neg = sample_negatives(index, n, k, torch.Generator().manual_seed(1))
    z = float((torch.einsum("bd,bkd->bk", v, loss_fn.memory.audio[neg]) / cfg.temperature).exp().mean())
    assert float(loss_fn.log_z[0]) == pytest.approx(math.log(z) + math.log(n), rel=1e-5)
    assert torch.isnan(loss_fn.log_z[1:]).all()  # the other slots are never estimated
    for name, (emb, bank) in {"v2a": (v, loss_fn.memory.audio), "a2a": (a, loss_fn.memory.audio)}.items():
        pos = (emb * bank[index]).sum(1) / cfg.temperature
        negl = torch.einsum("bd,bkd->bk", emb, bank[neg]) / cfg.temperature
        released = -(torch.log(pos.exp() / (pos.exp() + k * z))
                     + torch.log(k * z / (negl.exp() + k * z)).sum(1)).mean()
        assert terms[name] == pytest.approx(float(released), rel=1e-5)


def test_cma_with_a_shared_partition_keeps_the_restored_estimate():
    # CMA started from AVID: the within-modal positive-set terms use AVID's Z, never a fresh estimate.
    torch.manual_seed(0)
    n, d = 50, 8
    cfg = LossConfig(kind="cma", form="nce", num_negatives=16, cma_form="nce", cma_negatives=8, cma_topk=4,
                     nce_partition="shared")
    loss_fn = CMALoss(n, d, cfg)
    loss_fn.log_z[0] = 7.25  # as restored from the AVID checkpoint
    loss_fn.update_positives()
    _, terms = loss_fn(_unit(4, d), _unit(4, d), torch.tensor([1, 2, 3, 4]), torch.Generator().manual_seed(0))
    assert {"v2v_cma", "a2a_cma"} <= set(terms)
    assert float(loss_fn.log_z[0]) == 7.25 and torch.isnan(loss_fn.log_z[1:]).all()


def test_in_batch_loss_matches_a_plain_reference_both_directions():
    from avssl.losses.batch import InBatchLoss

    torch.manual_seed(0)
    b, d, h, w, t = 4, 8, 2, 3, 0.05
    video, audio = F.normalize(torch.randn(b, d, h, w), dim=1).double(), _unit(b, d).double()
    loss, terms = InBatchLoss(LossConfig(kind="batch", temperature=t))(video, audio)
    s = [[max(float(video[i, :, y, x] @ audio[j]) for y in range(h) for x in range(w)) / t for j in range(b)]
         for i in range(b)]
    v2a = sum(-s[i][i] + math.log(sum(math.exp(x) for x in s[i])) for i in range(b)) / b
    a2v = sum(-s[j][j] + math.log(sum(math.exp(s[i][j]) for i in range(b))) for j in range(b)) / b
    assert terms["v2a"] == pytest.approx(v2a, rel=1e-6) and terms["a2v"] == pytest.approx(a2v, rel=1e-6)
    assert float(loss) == pytest.approx((v2a + a2v) / 2, rel=1e-6)


def test_in_batch_loss_leaves_same_kind_sounds_out_of_the_negatives():
    from avssl.losses.batch import InBatchLoss

    torch.manual_seed(0)
    audio = _unit(4, 8)
    audio[1] = audio[0]  # clips 0 and 1: the same kind of sound
    video = _unit(4, 8)
    cfg = LossConfig(kind="batch", temperature=0.1, false_negative_threshold=0.9)
    _, terms = InBatchLoss(cfg)(video, audio)
    assert terms["false_negatives_per_clip"] == pytest.approx(2 / 4)  # (0, 1) and (1, 0)
    # the same as a loss over the batch without each other as negatives
    keep = [[j for j in range(4) if not {i, j} == {0, 1}] for i in range(4)]
    ref = sum(-math.log(math.exp(float(video[i] @ audio[i]) / 0.1)
                        / sum(math.exp(float(video[i] @ audio[j]) / 0.1) for j in keep[i])) for i in range(4)) / 4
    assert terms["v2a"] == pytest.approx(ref, rel=1e-5)


def test_top_k_pooling_scores_a_slot_by_its_k_best_locations():
    from avssl.losses.avid import pool_locations

    sim = torch.tensor([[0.9, 0.1, 0.5, 0.7]])
    assert torch.allclose(pool_locations(sim), torch.tensor([0.9]))
    assert torch.allclose(pool_locations(sim, 2), torch.tensor([0.8]))
    assert torch.allclose(pool_locations(sim, 10), sim.mean(-1))  # k past the locations: all of them
    emb = F.normalize(torch.randn(2, 5, 4), dim=-1)
    bank = _unit(6, 4)
    pos, neg = contrast(emb, bank, torch.tensor([0, 1]), torch.tensor([[2, 3], [4, 5]]), 0.1, topk=3)
    ref = torch.einsum("bld,bd->bl", emb, bank[[0, 1]]).topk(3, -1).values.mean(-1) / 0.1
    assert torch.allclose(pos, ref)


@pytest.mark.parametrize("av_negatives,share", [("own", 0.0), ("max", 0.5), ("own", 0.5)])
def test_own_location_negatives_and_frame_negatives_match_a_plain_reference(av_negatives, share):
    # own: other sounds are met at the location the clip's own sound chose; share: the mean similarity of the
    # frame's least-matching locations to its own (memory) sound is one more negative.
    torch.manual_seed(0)
    n, d, k, t = 20, 8, 5, 0.1
    cfg = LossConfig(av_pool="max", form="infonce", num_negatives=k, temperature=t, av_negatives=av_negatives,
                     frame_negatives=share)
    loss_fn = AVIDLoss(n, d, cfg)
    dense = F.normalize(torch.randn(3, d, 2, 2), dim=1)
    audio, index = _unit(3, d), torch.tensor([1, 7, 12])
    _, terms = loss_fn(dense, audio, index, torch.Generator().manual_seed(2))
    neg = sample_negatives(index, n, k, torch.Generator().manual_seed(2))
    bank = loss_fn.memory.audio
    expected = []
    for b in range(3):
        locs = dense[b].flatten(1).T  # (L, D)
        best = int((locs @ audio[b]).argmax())
        own = locs @ bank[index[b]]  # every location against the clip's own memory sound
        if av_negatives == "own":
            pos, negs = own[best], bank[neg[b]] @ locs[best]
        else:
            pos, negs = own.max(), (bank[neg[b]] @ locs.T).amax(1)
        if share:
            negs = torch.cat([own.sort().values[:2].mean()[None], negs])  # the 2 of 4 locations least like it
        logits = torch.cat([pos[None], negs]) / t
        expected.append(-F.log_softmax(logits, 0)[0])
    assert terms["v2a"] == pytest.approx(float(torch.stack(expected).mean()), rel=1e-5)


def test_spatial_negative_options_need_per_location_video_and_a_memory_bank():
    with pytest.raises(ConfigError, match="av_pool"):
        LossConfig(av_pool="mean", av_negatives="own")
    with pytest.raises(ConfigError, match="kind"):
        LossConfig(av_pool="max", kind="batch", frame_negatives=0.5)
    with pytest.raises(ConfigError, match="share"):
        LossConfig(av_pool="max", frame_negatives=1.0)
