from __future__ import annotations

import numpy as np
import pytest

from avssl.localize.metrics import auc, binarize, box_map, centre_prior, ciou, consensus_map, summarize


def test_ciou_by_hand():
    gt = np.zeros((4, 4))
    gt[:2, :2] = 1  # 4 pixels
    pred = np.zeros((4, 4))
    pred[:2, :3] = 1  # 6 pixels: 4 on the box, 2 off it
    assert ciou(pred, gt) == pytest.approx(4 / (4 + 2))
    assert ciou(gt, gt) == 1.0
    assert ciou(np.zeros((4, 4)), gt) == 0.0
    assert ciou(np.zeros((4, 4)), np.zeros((4, 4))) == 0.0  # nothing to find: scored 0, not NaN


def test_consensus_weights_of_several_annotators():
    # Three annotators on a 4x4 frame: two agree on the left half, one marks the top row.
    boxes = [[[0.0, 0.0, 0.5, 1.0]], [[0.0, 0.0, 0.5, 1.0]], [[0.0, 0.0, 1.0, 0.25]]]
    g = consensus_map(boxes, 4, 4)
    expected = np.array([[1, 1, 0.5, 0.5], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(g, expected)
    # Consensus-weighted cIoU: predicting the whole top row and left half.
    pred = (expected > 0).astype(float)
    assert ciou(pred, g) == pytest.approx(g.sum() / (g.sum() + 0))


def test_auc_edge_cases():
    assert auc([1.0, 1.0]) == pytest.approx(1.0)
    assert auc([0.0, 0.0]) == pytest.approx(0.025)  # only the threshold 0 counts every sample
    # Half the samples perfect, half zero: 0.5 everywhere except 1 at t=0.
    assert auc([1.0, 0.0]) == pytest.approx(0.5 + 0.0125)
    assert np.isnan(auc([]))
    s = summarize([0.5, 0.49, 1.0, 0.0])
    assert s["ciou_at_0.5"] == 0.5 and s["num_samples"] == 4


def test_binarizations():
    heat = np.array([[0.0, 0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7]])
    # median: strictly above the value at index N/2 of the sorted map (0.4): the top three
    np.testing.assert_array_equal(binarize(heat, "median"), [[0, 0, 0, 0], [0, 1, 1, 1]])
    np.testing.assert_array_equal(binarize(heat, "absolute"), [[0, 0, 0, 0], [0, 1, 1, 1]])
    gt = np.zeros((2, 4))
    gt[0, :2] = 1  # area 2: the two most salient pixels
    np.testing.assert_array_equal(binarize(heat, "adaptive", gt), [[0, 0, 0, 0], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="adaptive"):
        binarize(heat, "adaptive")
    with pytest.raises(ValueError, match="unknown"):
        binarize(heat, "otsu")


@pytest.mark.parametrize("mode", ["median", "absolute", "adaptive"])
def test_the_oracle_is_perfect_on_boxes_smaller_than_half_the_frame(mode):
    gt = box_map([[0.1, 0.2, 0.4, 0.6]], 90, 160)
    assert ciou(binarize(gt, mode, gt), gt) == 1.0


def test_boxes_follow_a_non_square_frame():
    g = box_map([[0.5, 0.0, 1.0, 0.5]], 2, 8)  # right half, top half of a 2x8 frame
    np.testing.assert_array_equal(g, [[0, 0, 0, 0, 1, 1, 1, 1], [0] * 8])
    g = box_map([[0.25, 0.25, 0.75, 0.75]], 120, 160)
    assert g.sum() == 60 * 80 and g[30:90, 40:120].all()


def test_centre_prior_peaks_in_the_middle_and_is_symmetric():
    c = centre_prior(90, 160)
    assert c.shape == (90, 160) and c.max() <= 1 and c.min() >= 0
    assert np.unravel_index(np.argmax(c), c.shape) in {(44, 79), (44, 80), (45, 79), (45, 80)}
    np.testing.assert_allclose(c, c[::-1, ::-1], atol=1e-6)
    # Under median binarization it selects a centred region of half the frame.
    assert binarize(c, "median").mean() == pytest.approx(0.5, abs=0.01)


def _slavc_reference(bb, ciou_list, confidence_list, iou_thr=0.5):
    """SLAVC's EvaluatorFull (utils.py, stoneMo/SLAVC) transcribed loop for loop: calc_precision_recall, calc_ap
    and the F1 grid of finalize_stats, to check avssl's vectorized version against."""
    def pr(thr):
        tp = fp = fn = 0
        for b, c, conf in zip(bb, ciou_list, confidence_list):
            if b == 0:
                if conf >= thr:
                    fp += 1
            elif conf >= thr:
                if c >= iou_thr:
                    tp += 1
                else:
                    fp += 1
            else:
                fn += 1
        return (1.0 if tp + fp == 0 else tp / (tp + fp)), (1.0 if tp + fn == 0 else tp / (tp + fn))

    precision, recall, skip = [], [], max(1, len(ciou_list) // 200)
    for thr in np.sort(np.array(confidence_list))[:-1][::-skip]:
        p, r = pr(thr)
        precision.append(p)
        recall.append(r)
    pmax = [np.max(precision[i:]) for i in range(len(precision))]
    ap = sum(pmax[i] * (recall[i + 1] - recall[i]) for i in range(len(pmax) - 1))
    f1 = [2 * r * p / (r + p) if r + p > 0 else 0.0
          for p, r in (pr(t) for t in list(sorted(confidence_list))[:: max(1, len(confidence_list) // 10)])]
    return ap, f1


def test_slavc_extended_is_slavcs_evaluator():
    from avssl.localize.metrics import slavc_extended

    # confidences .9 right, .8 wrong, .7 right (every sample with an object): SLAVC's AP is 1/3
    r = slavc_extended([True] * 3, [0.9, 0.1, 0.9], [0.9, 0.8, 0.7])
    assert r["ap"] == pytest.approx(1 / 3) and r["max_f1"] == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    for n_pos, n_neg in ((10, 20), (7, 0), (250, 250), (3, 500)):
        has = [True] * n_pos + [False] * n_neg
        cious = list(rng.random(n_pos)) + [0.0] * n_neg
        conf = list(rng.random(n_pos + n_neg).round(2))  # ties included
        ours = slavc_extended(has, cious, conf)
        ap, f1 = _slavc_reference([1] * n_pos + [0] * n_neg, cious, conf)
        assert ours["ap"] == pytest.approx(ap, abs=1e-12) and ours["f1"] == pytest.approx(f1, abs=1e-12)
        assert ours["max_f1"] == pytest.approx(max(f1))
    # recall counts every true-sound sample: one localized map of ten cannot reach an AP of 1
    one = slavc_extended([True] * 10 + [False] * 20, [0.9] + [0.1] * 9 + [0.0] * 20,
                         [1.0] + list(np.linspace(0.4, 0.05, 9)) + list(np.linspace(0.9, 0.45, 20)))
    assert one["ap"] < 0.1 and one["max_f1"] < 0.2


def test_slavc_confidence_is_the_mean_of_the_top_quarter_of_the_scaled_map():
    from avssl.localize.metrics import slavc_confidence

    sim = np.array([[-1.0, 0.0], [0.5, 1.0], [0.0, 0.0], [0.0, 0.0]])  # 8 values: the top 2 are 1.0 and 0.5
    assert slavc_confidence(sim) == pytest.approx(((1.0 + 1) / 2 + (0.5 + 1) / 2) / 2)


@pytest.mark.parametrize("mode", ["median", "median_inclusive", "adaptive"])
def test_a_map_without_information_scores_the_same_wherever_the_box_is(mode):
    flat = np.zeros((40, 60), np.float32)  # what `fixed` gives where nothing matches, or minmax of a flat map
    boxes = ([0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0, 1, 0.25], [0.25, 0.25, 0.75, 0.75])
    scores = [ciou(binarize(flat, mode, box_map([b], 40, 60)), box_map([b], 40, 60)) for b in boxes]
    assert len(set(scores)) == 1 and scores[0] < 0.5


def test_median_rules_differ_only_at_ties():
    heat = np.array([[0.0, 0.5, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])  # the value at index 4 of the sorted map: 0.5
    np.testing.assert_array_equal(binarize(heat, "median"), [[0, 0, 0, 0], [0, 0, 1, 1]])  # LVS: > 0.5
    np.testing.assert_array_equal(binarize(heat, "median_inclusive"), [[0, 1, 1, 1], [1, 1, 1, 1]])  # EZ-VSL: >=
    smooth = np.arange(8.0).reshape(2, 4) / 7
    assert np.array_equal(binarize(smooth, "median"), binarize(smooth, "median_inclusive") * (smooth > 4 / 7))


def test_adaptive_keeps_k_pixels_and_leaves_out_ties_that_would_pass_k():
    gt = np.zeros((2, 4))
    gt[0, :2] = 1  # k = 2
    np.testing.assert_array_equal(binarize(np.array([[0, 0.1, 0.9, 0.9], [0.9, 0.2, 0.3, 1.0]]), "adaptive", gt),
                                  [[0, 0, 0, 0], [0, 0, 0, 1]])  # 1.0, then three at 0.9 for one place: none
    np.testing.assert_array_equal(binarize(np.array([[0, 0.1, 0.9, 0.8], [0.7, 0.2, 0.3, 1.0]]), "adaptive", gt),
                                  [[0, 0, 1, 0], [0, 0, 0, 1]])


def test_summaries_use_the_exact_cious():
    s = summarize([0.4999995, 0.5])  # a cIoU a hair under 0.5 does not count at 0.5, rounded or not
    assert s["ciou_at_0.5"] == 0.5
